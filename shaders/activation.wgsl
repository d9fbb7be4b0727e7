// GLU activations. GELU uses the tanh approximation, as Gemma and llama.cpp do.

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn gelu_tanh(x: f32) -> f32 {
    // tanh written through exp so large |x| cannot overflow into NaN.
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    let e = exp(-2.0 * abs(u));
    let th = sign(u) * (1.0 - e) / (1.0 + e);
    return 0.5 * x * (1.0 + th);
}

#ifdef GLU_SILU
fn act(x: f32) -> f32 {
    return silu(x);
}
#endif
#ifdef GLU_OAI
// gpt-oss's clamped SwiGLU (llama.cpp swiglu_oai, alpha 1.702 and limit 7 as it hard-codes):
// the gate is capped at the limit, the up value clamped to it and shifted by one.
fn act(x: f32) -> f32 {
    let g = min(x, 7.0);
    return g / (1.0 + exp(-1.702 * g));
}
fn glu_up(x: f32) -> f32 {
    return clamp(x, -7.0, 7.0) + 1.0;
}
#else
fn glu_up(x: f32) -> f32 {
    return x;
}
#endif
#ifdef GLU_GELU
fn act(x: f32) -> f32 {
    return gelu_tanh(x);
}
#endif
