//! Per-kernel GPU timings from timestamp queries.
//!
//! With TIMESTAMP_QUERY_INSIDE_PASSES a step keeps its single compute pass and gets a timestamp
//! before and after every dispatch. With plain TIMESTAMP_QUERY every dispatch gets its own pass
//! with begin/end timestamps. Without timestamps every dispatch is submitted and waited for on
//! its own and timed on the CPU, which includes submission overhead (the report says so).

mod summary;

use std::time::Instant;

pub use summary::{KernelStats, ProfileSummary};

use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::ops::Op;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimingMode {
    InsidePasses,
    PerPass,
    CpuWait,
}

impl TimingMode {
    pub fn describe(self) -> &'static str {
        match self {
            TimingMode::InsidePasses => "GPU timestamps inside the compute pass",
            TimingMode::PerPass => "GPU timestamps, one compute pass per dispatch",
            TimingMode::CpuWait => {
                "no GPU timestamps on this adapter: CPU time of each dispatch submitted alone (includes submission overhead)"
            }
        }
    }
}

/// Which part of a step a dispatch belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Prefill,
    Decode,
}

#[derive(Clone, Debug)]
pub struct KernelEvent {
    pub label: String,
    pub phase: Phase,
    pub step: u32,
    /// Start relative to the profiler's first event, and duration, in nanoseconds.
    pub start_ns: f64,
    pub dur_ns: f64,
    pub bytes: u64,
}

/// Most dispatches timed in one step.
const MAX_OPS: u32 = 2048;

pub struct Profiler {
    mode: TimingMode,
    queries: Option<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
    period_ns: f64,
    origin: Option<u64>,
    cpu_origin: Instant,
    step: u32,
    pub events: Vec<KernelEvent>,
}

impl Profiler {
    pub fn new(gpu: &Gpu) -> Profiler {
        let mode = if gpu.caps.timestamps_in_passes {
            TimingMode::InsidePasses
        } else if gpu.caps.timestamps {
            TimingMode::PerPass
        } else {
            TimingMode::CpuWait
        };
        let (queries, resolve) = if mode == TimingMode::CpuWait {
            (None, None)
        } else {
            let q = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * MAX_OPS,
            });
            let r = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile.resolve"),
                size: 2 * MAX_OPS as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (Some(q), Some(r))
        };
        Profiler {
            mode,
            queries,
            resolve,
            period_ns: gpu.queue.get_timestamp_period() as f64,
            origin: None,
            cpu_origin: Instant::now(),
            step: 0,
            events: Vec::new(),
        }
    }

    pub fn mode(&self) -> TimingMode {
        self.mode
    }

    /// Per-kernel totals of the events recorded so far, which are then forgotten: a caller
    /// that profiles a long run takes a summary now and then instead of letting events pile up.
    pub fn take_summary(&mut self) -> ProfileSummary {
        ProfileSummary::of(self.mode, &std::mem::take(&mut self.events))
    }

    /// Records, submits and times `ops` for a batch of `n` tokens; then runs `tail` (readback
    /// copies) in a last submission. Returns when the GPU is done.
    pub fn run(
        &mut self,
        gpu: &Gpu,
        ops: &[&Op],
        n: u32,
        phase: Phase,
        tail: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<()> {
        self.step += 1;
        if ops.len() as u32 > MAX_OPS {
            return Err(EngineError::InvalidArgument(format!(
                "{} dispatches exceed the profiler's {MAX_OPS}",
                ops.len()
            )));
        }
        let bytes = |op: &Op| op.traffic.0 + op.traffic.1 * n as u64;
        match (self.mode, &self.queries, &self.resolve) {
            (TimingMode::CpuWait, _, _) | (_, None, _) | (_, _, None) => {
                for op in ops {
                    let t = Instant::now();
                    gpu.run(std::slice::from_ref(*op), n)?;
                    let dur = t.elapsed().as_nanos() as f64;
                    let start = (t - self.cpu_origin).as_nanos() as f64;
                    self.events.push(KernelEvent {
                        label: op.label().to_string(),
                        phase,
                        step: self.step,
                        start_ns: start,
                        dur_ns: dur,
                        bytes: bytes(op),
                    });
                }
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                tail(&mut enc);
                gpu.queue.submit([enc.finish()]);
                gpu.wait()
            }
            (mode, Some(qs), Some(resolve)) => {
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
                if mode == TimingMode::InsidePasses {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("step"),
                        timestamp_writes: None,
                    });
                    for (i, op) in ops.iter().enumerate() {
                        pass.write_timestamp(qs, 2 * i as u32);
                        op.record(&mut pass, n);
                        pass.write_timestamp(qs, 2 * i as u32 + 1);
                    }
                } else {
                    for (i, op) in ops.iter().enumerate() {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(op.label()),
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: qs,
                                beginning_of_pass_write_index: Some(2 * i as u32),
                                end_of_pass_write_index: Some(2 * i as u32 + 1),
                            }),
                        });
                        op.record(&mut pass, n);
                    }
                }
                let count = 2 * ops.len() as u32;
                enc.resolve_query_set(qs, 0..count, resolve, 0);
                let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile.read"),
                    size: count as u64 * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(resolve, 0, &read, 0, count as u64 * 8);
                tail(&mut enc);
                gpu.queue.submit([enc.finish()]);
                let stamps: Vec<u64> = bytemuck::pod_collect_to_vec(&map_read(gpu, &read)?);
                let origin = *self.origin.get_or_insert(stamps.first().copied().unwrap_or(0));
                for (i, op) in ops.iter().enumerate() {
                    let (a, b) = (stamps[2 * i], stamps[2 * i + 1]);
                    self.events.push(KernelEvent {
                        label: op.label().to_string(),
                        phase,
                        step: self.step,
                        start_ns: a.saturating_sub(origin) as f64 * self.period_ns,
                        dur_ns: b.saturating_sub(a) as f64 * self.period_ns,
                        bytes: bytes(op),
                    });
                }
                Ok(())
            }
        }
    }

    /// Chrome trace-event JSON (Perfetto, chrome://tracing): one complete event per dispatch
    /// on a GPU track per phase.
    pub fn chrome_trace(&self) -> String {
        let mut out = String::from("{\"traceEvents\":[\n");
        out.push_str(
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"wllm GPU\"}},\n",
        );
        for (tid, name) in [(1, "prefill"), (2, "decode")] {
            out.push_str(&format!(
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{tid},\"args\":{{\"name\":\"GPU {name}\"}}}},\n"
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            let tid = if e.phase == Phase::Prefill { 1 } else { 2 };
            out.push_str(&format!(
                "{{\"name\":{},\"cat\":\"kernel\",\"ph\":\"X\",\"pid\":1,\"tid\":{tid},\"ts\":{:.3},\"dur\":{:.3},\"args\":{{\"step\":{},\"bytes\":{}}}}}{}\n",
                serde_json_string(&e.label),
                e.start_ns / 1e3,
                e.dur_ns / 1e3,
                e.step,
                e.bytes,
                if i + 1 == self.events.len() { "" } else { "," }
            ));
        }
        out.push_str("]}\n");
        out
    }
}

fn serde_json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn map_read(gpu: &Gpu, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    let slice = buf.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv()
        .map_err(|e| EngineError::gpu("profile readback", e))?
        .map_err(|e| EngineError::gpu("profile readback", e))?;
    let v = slice.get_mapped_range().map_err(|e| EngineError::gpu("profile readback", e))?.to_vec();
    buf.unmap();
    Ok(v)
}

/// Device buffer-copy bandwidth in GB/s (bytes copied per second): the yardstick for kernels'
/// achieved bandwidth.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let size = (gpu.max_binding().min(256 << 20)) & !255;
    let mk = || {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bw"),
            size,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (a, b) = (mk(), mk());
    let mut best = 0f64;
    for i in 0..4 {
        let t = Instant::now();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
        gpu.queue.submit([enc.finish()]);
        gpu.wait()?;
        // The first copy also faults the pages in.
        if i > 0 {
            best = best.max(size as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    Ok(best)
}
