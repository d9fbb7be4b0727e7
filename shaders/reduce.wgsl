// Workgroup-wide sums of up to four values at once. The kernel declares `override WG: u32`
// (a power of two, at most 256) and, with subgroups, stores its subgroup builtins in
// `sg_size`/`sg_lane` at entry. Every invocation of the workgroup must call these together.

var<workgroup> red4: array<vec4<f32>, 256>;
var<private> sg_size: u32 = 1u;
var<private> sg_lane: u32 = 0u;

fn wg_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
#ifdef HAS_SUBGROUPS
    let s = subgroupAdd(v);
    if (sg_size >= WG) {
        return s;
    }
    // Subgroups are assumed to be runs of consecutive local indices, as on every driver we
    // know of; the test suite also runs the shared-memory path below.
    let nsg = WG / sg_size;
    if (sg_lane == 0u) {
        red4[lid / sg_size] = s;
    }
    workgroupBarrier();
    var t = vec4<f32>(0.0);
    for (var i = 0u; i < nsg; i++) {
        t += red4[i];
    }
    workgroupBarrier();
    return t;
#else
    red4[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red4[lid] += red4[lid + s];
        }
        workgroupBarrier();
    }
    let t = red4[0];
    workgroupBarrier();
    return t;
#endif
}

fn wg_sum(v: f32, lid: u32) -> f32 {
    return wg_sum4(vec4<f32>(v, 0.0, 0.0, 0.0), lid).x;
}

// Maximum over the workgroup.
fn wg_max(v: f32, lid: u32) -> f32 {
#ifdef HAS_SUBGROUPS
    let s = subgroupMax(v);
    if (sg_size >= WG) {
        return s;
    }
    let nsg = WG / sg_size;
    if (sg_lane == 0u) {
        red4[lid / sg_size].x = s;
    }
    workgroupBarrier();
    var t = red4[0].x;
    for (var i = 1u; i < nsg; i++) {
        t = max(t, red4[i].x);
    }
    workgroupBarrier();
    return t;
#else
    red4[lid].x = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red4[lid].x = max(red4[lid].x, red4[lid + s].x);
        }
        workgroupBarrier();
    }
    let t = red4[0].x;
    workgroupBarrier();
    return t;
#endif
}
