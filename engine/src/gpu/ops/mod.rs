//! Ops as data: a pipeline, its bind group and how many workgroups to launch for a batch.
//! Constructors check shapes and return `Result`; recording is separate, so a whole token step
//! goes into one compute pass of one command encoder.

/// The [`ParamsLayout`] of a `#[repr(C)]` params struct, given the struct and all its fields in
/// order. The pattern below has no `..`, so a field added to the struct and not listed here
/// does not compile.
macro_rules! params_layout {
    ($t:ident { $($field:ident),* $(,)? }) => {{
        #[allow(dead_code)]
        fn lists_every_field(p: $t) {
            let $t { $($field: _),* } = p;
        }
        $crate::gpu::ops::ParamsLayout {
            fields: &[$((stringify!($field), ::std::mem::offset_of!($t, $field))),*],
            size: ::std::mem::size_of::<$t>(),
        }
    }};
}

pub mod argmax;
pub mod attention;
pub mod delta_net;
pub mod delta_rule;
pub mod elementwise;
pub mod get_rows;
pub mod hadamard;
pub mod lane;
pub mod linear;
pub mod logprob;
pub mod matmul;
pub mod matvec;
pub mod moe;
pub mod norm;
pub mod rope;

use std::sync::Arc;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::gpu::device::Gpu;
use crate::gpu::pipeline::Pipeline;

/// How Rust lays out an op's uniform params struct, for the test that holds it to the WGSL
/// struct of the same name.
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub struct ParamsLayout {
    /// Field names and byte offsets, in declaration order.
    pub fields: &'static [(&'static str, usize)],
    /// Bytes, trailing padding included.
    pub size: usize,
}

/// Every op's params: the shader file its pipelines are built from, the name of the WGSL
/// struct, and the Rust layout uploaded into it. The three linear kernels share
/// `LinearParams`, whose WGSL twin each of their files includes from `linear_common.wgsl`.
#[doc(hidden)]
pub fn param_layouts() -> Vec<(&'static str, &'static str, ParamsLayout)> {
    vec![
        ("argmax.wgsl", "Params", argmax::PARAMS_LAYOUT),
        ("logprob.wgsl", "Params", logprob::PARAMS_LAYOUT),
        ("attention.wgsl", "Params", attention::PARAMS_LAYOUT),
        ("delta_net.wgsl", "Params", delta_net::PARAMS_LAYOUT),
        ("delta_rule.wgsl", "Params", delta_rule::PARAMS_LAYOUT),
        ("elementwise.wgsl", "Params", elementwise::PARAMS_LAYOUT),
        ("get_rows.wgsl", "Params", get_rows::PARAMS_LAYOUT),
        ("hadamard.wgsl", "Params", hadamard::PARAMS_LAYOUT),
        ("matvec.wgsl", "Params", linear::PARAMS_LAYOUT),
        ("matmul.wgsl", "Params", linear::PARAMS_LAYOUT),
        ("linear_lane.wgsl", "Params", linear::PARAMS_LAYOUT),
        ("moe.wgsl", "Params", moe::PARAMS_LAYOUT),
        ("norm.wgsl", "Params", norm::PARAMS_LAYOUT),
        ("rope.wgsl", "Params", rope::PARAMS_LAYOUT),
    ]
}

/// Largest workgroup count per grid dimension that every WebGPU device accepts.
pub const MAX_GRID: u32 = 65535;

/// How many workgroups a dispatch needs for `n` tokens.
#[derive(Copy, Clone, Debug)]
pub enum Grid {
    Fixed([u32; 3]),
    /// `groups` workgroups (folded into x*y when over the limit) for each token along z.
    PerToken {
        groups: u32,
    },
    /// Like `PerToken`, with ceil(tokens / tile) along z.
    PerTokenTiles {
        groups: u32,
        tile: u32,
    },
    /// Like `PerToken`, with `per_token` entries per token along z (expert pairs).
    PerTokenTimes {
        groups: u32,
        per_token: u32,
    },
    /// One workgroup per token along x, times `y` along y.
    TokensX {
        y: u32,
    },
    /// `x` workgroups, and one per token along y.
    TokensY {
        x: u32,
    },
    /// `x` workgroups, and ceil(tokens / tile) along y.
    TokenTiles {
        x: u32,
        tile: u32,
    },
    /// ceil(tokens / tile) along x.
    TokenTilesX {
        tile: u32,
    },
    /// ceil(tokens * rows_per_token / rows_per_group) along x.
    Rows {
        rows_per_token: u32,
        rows_per_group: u32,
    },
    /// As `Rows`, times `splits` along y.
    RowsSplit {
        rows_per_token: u32,
        rows_per_group: u32,
        splits: u32,
    },
}

impl Grid {
    pub fn dims(&self, n_tokens: u32) -> [u32; 3] {
        match *self {
            Grid::Fixed(d) => d,
            Grid::PerToken { groups } => {
                let (x, y) = fold(groups);
                [x, y, n_tokens]
            }
            Grid::PerTokenTiles { groups, tile } => {
                let (x, y) = fold(groups);
                [x, y, n_tokens.div_ceil(tile)]
            }
            Grid::PerTokenTimes { groups, per_token } => {
                let (x, y) = fold(groups);
                [x, y, n_tokens * per_token]
            }
            Grid::TokensX { y } => [n_tokens, y, 1],
            Grid::TokensY { x } => [x, n_tokens, 1],
            Grid::TokenTiles { x, tile } => [x, n_tokens.div_ceil(tile), 1],
            Grid::TokenTilesX { tile } => [n_tokens.div_ceil(tile), 1, 1],
            Grid::Rows { rows_per_token, rows_per_group } => {
                [(n_tokens * rows_per_token).div_ceil(rows_per_group), 1, 1]
            }
            Grid::RowsSplit { rows_per_token, rows_per_group, splits } => {
                [(n_tokens * rows_per_token).div_ceil(rows_per_group), splits, 1]
            }
        }
    }
}

/// Splits a workgroup count over x and y so neither exceeds the per-dimension limit. Kernels
/// rebuild the flat index as `wid.x + wid.y * num_workgroups.x` and skip the excess.
pub fn fold(groups: u32) -> (u32, u32) {
    if groups <= MAX_GRID {
        (groups.max(1), 1)
    } else {
        let y = groups.div_ceil(MAX_GRID);
        (groups.div_ceil(y), y)
    }
}

/// One recorded dispatch.
#[derive(Clone, Debug)]
pub struct Op {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    pub grid: Grid,
    /// Dispatch size read from this buffer at this offset instead of `grid`.
    pub indirect: Option<(wgpu::Buffer, u64)>,
    /// Bytes the dispatch reads and writes: fixed, plus per token (for profiles).
    pub traffic: (u64, u64),
}

impl Op {
    pub fn label(&self) -> &str {
        &self.pipeline.label
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        if let Some((buf, offset)) = &self.indirect {
            pass.set_pipeline(&self.pipeline.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups_indirect(buf, *offset);
            return;
        }
        let [x, y, z] = self.grid.dims(n_tokens);
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A bound resource: a whole buffer or a byte range of one.
#[derive(Copy, Clone, Debug)]
pub enum Res<'a> {
    Buf(&'a wgpu::Buffer),
    Range(&'a wgpu::Buffer, u64, u64),
}

impl<'a> From<&'a wgpu::Buffer> for Res<'a> {
    fn from(b: &'a wgpu::Buffer) -> Self {
        Res::Buf(b)
    }
}

impl Gpu {
    pub fn uniform<T: Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub fn bind_group(&self, p: &Pipeline, entries: &[(u32, Res<'_>)]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
            .iter()
            .map(|(binding, res)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: match *res {
                    Res::Buf(b) => b.as_entire_binding(),
                    Res::Range(b, offset, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset,
                        size: wgpu::BufferSize::new(size),
                    }),
                },
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&p.label),
            layout: &p.layout,
            entries: &entries,
        })
    }

    pub fn op(&self, p: Arc<Pipeline>, entries: &[(u32, Res<'_>)], grid: Grid) -> Op {
        let bind_group = self.bind_group(&p, entries);
        Op { pipeline: p, bind_group, grid, indirect: None, traffic: (0, 0) }
    }

    /// A storage buffer of `size` bytes (rounded up to 4), usable as copy source and target.
    pub fn storage(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Usage of buffers written once at creation. On unified memory with mappable storage
    /// buffers they are host-writable themselves, so the mapped view *is* the device memory
    /// and no staging buffer sits between the file and the GPU; elsewhere wgpu stages the
    /// write (bounded by the loader's periodic flushes).
    fn weight_usage(&self) -> wgpu::BufferUsages {
        let base = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        if self.caps.unified_memory && self.caps.mappable_primary_buffers {
            base | wgpu::BufferUsages::MAP_WRITE
        } else {
            base
        }
    }

    /// A storage buffer of `size` bytes whose contents `fill` writes straight into the mapped
    /// memory, as `put(offset, bytes)` calls (no staging copy on the host).
    pub fn storage_with(
        &self,
        label: &str,
        size: u64,
        fill: impl FnOnce(&mut dyn FnMut(usize, &[u8])),
    ) -> wgpu::Buffer {
        let size = size.max(4).next_multiple_of(4);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: self.weight_usage(),
            mapped_at_creation: true,
        });
        if let Ok(mut view) = buf.slice(..).get_mapped_range_mut() {
            fill(&mut |at, bytes| view.slice(at..at + bytes.len()).copy_from_slice(bytes));
        }
        buf.unmap();
        buf
    }

    /// A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes).
    pub fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let size = (data.len() as u64).max(4).next_multiple_of(4);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: self.weight_usage(),
            mapped_at_creation: true,
        });
        {
            // A buffer mapped at creation is always mappable in full.
            if let Ok(mut view) = buf.slice(..).get_mapped_range_mut() {
                let mut padded;
                let bytes = if data.len() as u64 == size {
                    data
                } else {
                    padded = vec![0u8; size as usize];
                    padded[..data.len()].copy_from_slice(data);
                    &padded[..]
                };
                view.copy_from_slice(bytes);
            }
        }
        buf.unmap();
        buf
    }
}

/// Smallest power of two >= n, within [lo, hi].
pub fn pow2_clamp(n: u32, lo: u32, hi: u32) -> u32 {
    n.next_power_of_two().clamp(lo, hi)
}

impl Gpu {
    /// Records `ops` into one compute pass, submits, and waits (tests, benches, tools).
    pub fn run(&self, ops: &[Op], n_tokens: u32) -> crate::error::Result<()> {
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("run"),
                timestamp_writes: None,
            });
            for op in ops {
                op.record(&mut pass, n_tokens);
            }
        }
        self.queue.submit([enc.finish()]);
        self.wait()
    }

    /// Copies a whole buffer back to the host (tests, tools; not for the token loop).
    pub fn read_bytes(&self, buf: &wgpu::Buffer) -> crate::error::Result<Vec<u8>> {
        use crate::error::EngineError;
        let size = buf.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read") });
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv().map_err(|e| EngineError::gpu("read", e))?.map_err(|e| EngineError::gpu("read", e))?;
        let out = slice.get_mapped_range().map_err(|e| EngineError::gpu("read", e))?.to_vec();
        staging.unmap();
        Ok(out)
    }

    pub fn read_f32(&self, buf: &wgpu::Buffer) -> crate::error::Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(buf)?))
    }
}
