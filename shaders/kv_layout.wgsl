// The KV cache's quantized rows, as rope.wgsl writes and attention.wgsl reads them: a row of
// `dim` elements is its quants, four Q8_0 bytes or eight Q4_0 nibbles per u32 word (the first
// element lowest), then the f16 scales of its 32-element blocks, two per word.

#ifdef K_QUANT
const K_QUANTIZED: bool = true;
#else
const K_QUANTIZED: bool = false;
#endif
#ifdef K_Q4
const K_IS_Q4: bool = true;
#else
const K_IS_Q4: bool = false;
#endif
#ifdef V_Q4
const V_IS_Q4: bool = true;
#else
const V_IS_Q4: bool = false;
#endif

// Quant words of one 32-element block.
fn block_words(q4: bool) -> u32 {
    return select(8u, 4u, q4);
}

// Quant words of a row of `dim` elements.
fn quant_words(dim: u32, q4: bool) -> u32 {
    return dim / 32u * block_words(q4);
}

// All the words of a row: quants, then one word per two block scales.
fn row_words(dim: u32, q4: bool) -> u32 {
    return quant_words(dim, q4) + (dim / 32u + 1u) / 2u;
}
