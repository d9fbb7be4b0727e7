// Byte-addressed reads from the weight buffer `W` (bound as array<u32>), so that every block
// size works, including blocks that are only 2- or 1-byte aligned (Q8_0 is 34 bytes, MXFP4 17).

fn w_u8(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xFFu;
}

// b must be even.
fn w_u16(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 2u) * 8u)) & 0xFFFFu;
}

fn w_u32(b: u32) -> u32 {
    let s = (b & 3u) * 8u;
    let lo = W[b >> 2u];
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (W[(b >> 2u) + 1u] << (32u - s));
}

fn w_f16(b: u32) -> f32 {
    return unpack2x16float(w_u16(b)).x;
}

// The four bytes of a word as a vector, low byte first.
fn bytes4(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu);
}

// The four bytes of a word, sign-extended.
fn sbytes4(q: u32) -> vec4<f32> {
    let s = bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(s);
}

fn lo_nibbles(q: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFu));
}

fn hi_nibbles(q: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(q) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(0xFu));
}

// Bits k..k+3 of `h` (one bit per element) as 0/1.
fn bits4(h: u32, k: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(h) >> (vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u));
}
