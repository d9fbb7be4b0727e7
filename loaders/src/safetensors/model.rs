//! A Hugging Face model directory presented the way a GGUF file is: tensors under GGUF names
//! with GGUF semantics, hyperparameters from `config.json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::convert;
use super::error::SafetensorsError;
use super::files::{SafetensorsFiles, read_json_file};
use super::plan::{Planned, Recipe, plan};
use super::rope_freqs::llama3_rope_factors;
use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;
use crate::model::{ModelConfig, ModelError, TensorBytes, TensorMeta, TensorSource};

/// Configs are a few KB; the cap bounds what a hostile one can make `serde_json::Value` hold.
const MAX_CONFIG_LEN: u64 = 4 << 20;

/// A safetensors model: its files, its `config.json`, and the GGUF view of its tensors.
///
/// Most tensors are borrowed from the memory maps. Those whose GGUF form differs (1-D tensors
/// and routers widened to F32, Gemma and Qwen3.5 norms shifted by one, experts stacked, fused
/// experts split, gpt-oss's experts repacked or transposed, DeltaNet decay rates exponentiated
/// and Qwen3-Next's `in_proj_qkvz` split) are converted each time [`TensorSource::bytes`] is
/// asked for them, so ask once per upload.
pub struct SafetensorsModel {
    files: SafetensorsFiles,
    hf_config: Value,
    config: ModelConfig,
    tensors: HashMap<String, Planned>,
    unmapped: Vec<String>,
}

impl std::fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field("files", &self.files)
            .field("arch", &self.config.arch)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsModel {
    /// Opens a model directory, or a `.safetensors` file with `config.json` beside it.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsModel> {
        let path = path.as_ref();
        let files = SafetensorsFiles::open(path)?;
        let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
        let config_path = dir.join("config.json");
        let json = read_json_file(&config_path, "config.json", MAX_CONFIG_LEN)?;
        let hf_config: Value = serde_json::from_slice(&json)
            .map_err(|e| Error::safetensors(&config_path, SafetensorsError::Json(e)))?;
        let mut model = SafetensorsModel::build(files, hf_config, &config_path)?;
        if model.config.name.is_none() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            model.config.name = std::fs::canonicalize(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        Ok(model)
    }

    /// Builds the GGUF view of already-open files from a parsed `config.json`.
    pub fn new(files: SafetensorsFiles, hf_config: Value) -> Result<SafetensorsModel> {
        let root = files.root().to_path_buf();
        SafetensorsModel::build(files, hf_config, &root)
    }

    fn build(files: SafetensorsFiles, hf_config: Value, config_path: &Path) -> Result<SafetensorsModel> {
        let config_error = |e: ModelError| Error::safetensors(config_path, SafetensorsError::Config(e));
        let config = ModelConfig::from_hf_config(&hf_config).map_err(config_error)?;
        let mut plan = plan(&files, &config).map_err(|e| Error::safetensors(files.root(), e))?;

        if let Some(factors) = llama3_rope_factors(&hf_config, &config).map_err(config_error)? {
            let meta = TensorMeta {
                name: "rope_freqs.weight".into(),
                ggml_type: GgmlType::F32,
                dims: vec![factors.len() as u64],
            };
            let bytes = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
            let planned = Planned { meta, recipe: Recipe::Computed(bytes), source: "config.json".into() };
            plan.tensors.insert("rope_freqs.weight".into(), planned);
        }

        // transformers would leave an untied, absent head randomly initialised; refuse instead.
        let tied = [hf_config.get("text_config"), Some(&hf_config)]
            .into_iter()
            .flatten()
            .find_map(|scope| scope.get("tie_word_embeddings").and_then(Value::as_bool));
        if tied == Some(false) && !plan.tensors.contains_key("output.weight") {
            let missing = SafetensorsError::Config(ModelError::MissingTensor("lm_head.weight".into()));
            return Err(Error::safetensors(files.root(), missing));
        }

        Ok(SafetensorsModel { files, hf_config, config, tensors: plan.tensors, unmapped: plan.unmapped })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// The parsed `config.json`, for keys wllm does not interpret (token ids, chat settings).
    pub fn hf_config(&self) -> &Value {
        &self.hf_config
    }
    /// The stored tensors under their Hugging Face names.
    pub fn files(&self) -> &SafetensorsFiles {
        &self.files
    }
    /// Every tensor of the GGUF view, sorted by name.
    pub fn tensor_metas(&self) -> Vec<&TensorMeta> {
        let mut metas: Vec<&TensorMeta> = self.tensors.values().map(|p| &p.meta).collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        metas
    }
    /// Stored tensors the model does not use (vision towers, rotary caches, extra heads).
    pub fn unmapped(&self) -> &[String] {
        &self.unmapped
    }

    fn produce<'a>(&'a self, recipe: &'a Recipe) -> Cow<'a, [u8]> {
        let raw = |id: usize| {
            let t = &self.files.tensors()[id];
            (t, self.files.data(t))
        };
        match recipe {
            Recipe::Borrow(id) => Cow::Borrowed(raw(*id).1),
            Recipe::F32 { src, shift } => {
                let (t, bytes) = raw(*src);
                Cow::Owned(convert::to_f32(t.dtype, bytes, *shift))
            }
            Recipe::Stack(ids) => {
                let parts: Vec<&[u8]> = ids.iter().map(|&id| raw(id).1).collect();
                Cow::Owned(convert::stack(&parts))
            }
            Recipe::FusedHalf { src, second } => {
                let (t, bytes) = raw(*src);
                let n_expert = t.shape.first().copied().unwrap_or(1).max(1) as usize;
                let half = bytes.len() / n_expert / 2;
                Cow::Owned(convert::fused_half(bytes, n_expert, half, *second))
            }
            Recipe::Computed(bytes) => Cow::Borrowed(bytes),
            Recipe::Mxfp4 { blocks, scales, groups, pick } => {
                Cow::Owned(convert::mxfp4_from_hf(raw(*blocks).1, raw(*scales).1, *groups, *pick))
            }
            Recipe::Transpose { src, pick } => {
                let (t, bytes) = raw(*src);
                // The plan checked the shape is [n_expert, a, b].
                let [n, a, b] = t.shape[..] else { unreachable!("planned as 3-D") };
                let elem = convert::elem_size(t.dtype);
                Cow::Owned(convert::transpose_pick(bytes, elem, n as usize, a as usize, b as usize, *pick))
            }
            Recipe::NegExpF32 { src } => {
                let (t, bytes) = raw(*src);
                Cow::Owned(convert::neg_exp_f32(t.dtype, bytes))
            }
            Recipe::Rows { src, ranges } => {
                let (t, bytes) = raw(*src);
                let row_bytes = bytes.len() / t.shape.first().copied().unwrap_or(1).max(1) as usize;
                Cow::Owned(convert::gather_rows(bytes, row_bytes, ranges))
            }
            Recipe::BiasF32 { src, pick } => {
                let (t, bytes) = raw(*src);
                let cols = t.shape.last().copied().unwrap_or(1) as usize;
                let elem = convert::elem_size(t.dtype);
                Cow::Owned(convert::to_f32(t.dtype, &convert::pick_columns(bytes, elem, cols, *pick), 0.0))
            }
        }
    }
}

impl TensorSource for SafetensorsModel {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.tensors.get(name).map(|p| p.meta.clone())
    }
    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
        let p = self.tensors.get(name)?;
        Some(TensorBytes { meta: p.meta.clone(), bytes: self.produce(&p.recipe) })
    }
}
