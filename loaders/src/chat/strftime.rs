//! `strftime_now` for templates that print today's date (Llama 3.x, Granite, ...). Dates are in
//! UTC: no time zone database is needed and renders are the same on every machine.
//! (llama.cpp formats local time; the two agree wherever TZ is UTC.)

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

struct Civil {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    yday: u32,  // 1..=366
    wday: u32,  // 0 = Sunday
    hour: u32,
    minute: u32,
    second: u32,
}

fn civil(t: SystemTime) -> Civil {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400) as u32;
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras that start
    // on 1 March so the leap day falls at the end of each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = BEFORE[month as usize - 1] + day + u32::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        yday,
        wday: (days + 4).rem_euclid(7) as u32,
        hour: tod / 3600,
        minute: tod / 60 % 60,
        second: tod % 60,
    }
}

/// Formats `t` with C/Python `strftime` directives. An unsupported directive is an error
/// naming it rather than a silently wrong date.
pub(crate) fn strftime(format: &str, t: SystemTime) -> Result<String, String> {
    let c = civil(t);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        // `%-d` (glibc, and Python on Linux and macOS) drops the zero padding.
        let mut spec = chars.next().ok_or("format ends with a lone %")?;
        let pad = spec != '-';
        if !pad {
            spec = chars.next().ok_or("format ends with %-")?;
        }
        let num = |n: i64, width: usize| if pad { format!("{n:0width$}") } else { n.to_string() };
        let hour12 = match c.hour % 12 {
            0 => 12,
            h => h,
        };
        let piece = match spec {
            'Y' => c.year.to_string(),
            'y' => num(c.year.rem_euclid(100), 2),
            'm' => num(c.month.into(), 2),
            'd' => num(c.day.into(), 2),
            'e' => format!("{:>2}", c.day),
            'j' => num(c.yday.into(), 3),
            'H' => num(c.hour.into(), 2),
            'I' => num(hour12.into(), 2),
            'M' => num(c.minute.into(), 2),
            'S' => num(c.second.into(), 2),
            'p' => (if c.hour < 12 { "AM" } else { "PM" }).to_string(),
            'B' => MONTHS[c.month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[c.month as usize - 1][..3].to_string(),
            'A' => DAYS[c.wday as usize].to_string(),
            'a' => DAYS[c.wday as usize][..3].to_string(),
            'w' => c.wday.to_string(),
            'F' => format!("{}-{:02}-{:02}", c.year, c.month, c.day),
            'T' => format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second),
            'Z' => "UTC".to_string(),
            'z' => "+0000".to_string(),
            '%' => "%".to_string(),
            other => return Err(format!("unsupported strftime directive %{other}")),
        };
        out.push_str(&piece);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::strftime;

    #[test]
    fn formats_known_dates() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %j", at(0)).unwrap(), "1970-01-01 00:00:00 Thu 001");
        // 2024-07-26 13:05:09 UTC, a Friday; day 208 of a leap year.
        let t = at(1_721_999_109);
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "26 Jul 2024");
        assert_eq!(strftime("%B %-d, %Y %I:%M %p %A %j", t).unwrap(), "July 26, 2024 01:05 PM Friday 208");
        // 2000-02-29, the leap day of a century leap year.
        assert_eq!(strftime("%F %w", at(951_782_400)).unwrap(), "2000-02-29 2");
        assert!(strftime("%Q", t).unwrap_err().contains("%Q"));
    }
}
