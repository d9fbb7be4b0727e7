//! Llama 3.1-style RoPE scaling keeps the rotation and divides each frequency by its own factor.
//! convert_hf_to_gguf.py (`LlamaModel.generate_extra_tensors`) stores those factors as the
//! `rope_freqs.weight` tensor; a Hugging Face checkpoint only has the parameters, so the same
//! tensor is computed here.

use serde_json::{Map, Value};

use crate::model::{ModelConfig, ModelError};

/// The factors, one per rotated pair, or `None` when the config does not ask for llama3 scaling.
pub(super) fn llama3_rope_factors(hf: &Value, cfg: &ModelConfig) -> Result<Option<Vec<f32>>, ModelError> {
    let Some(params) = rope_params(hf) else { return Ok(None) };
    let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str);
    if kind != Some("llama3") {
        return Ok(None);
    }
    let num = |key: &str, default: f64| -> Result<f64, ModelError> {
        match params.get(key).filter(|v| !v.is_null()) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                ModelError::BadHyperparameter(format!(
                    "config.json: rope_scaling.{key} is {v}, expected a number"
                ))
            }),
        }
    };
    // Defaults as in the converter.
    let factor = num("factor", 8.0)?;
    let low = num("low_freq_factor", 1.0)?;
    let high = num("high_freq_factor", 4.0)?;
    let old_ctx = num("original_max_position_embeddings", 8192.0)?;
    if !(factor > 0.0 && old_ctx > 0.0 && low > 0.0 && high > low) {
        return Err(ModelError::BadHyperparameter(format!(
            "llama3 RoPE scaling needs factor > 0, original_max_position_embeddings > 0 and \
             high_freq_factor > low_freq_factor > 0 (found {factor}, {old_ctx}, {high}, {low})"
        )));
    }

    let dim = cfg.head_dim as f64;
    let base = cfg.rope_base as f64;
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let factors = (0..cfg.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f64 / dim);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect();
    Ok(Some(factors))
}

fn rope_params(hf: &Value) -> Option<&Map<String, Value>> {
    let scopes = [hf.get("text_config"), Some(hf)];
    for scope in scopes.into_iter().flatten() {
        for key in ["rope_parameters", "rope_scaling"] {
            if let Some(Value::Object(p)) = scope.get(key) {
                return Some(p.get("full_attention").and_then(Value::as_object).unwrap_or(p));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_converter_formula() {
        let hf = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 32, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        });
        let cfg = ModelConfig::from_hf_config(&hf).unwrap();
        let f = llama3_rope_factors(&hf, &cfg).unwrap().unwrap();
        assert_eq!(f.len(), 8);
        // Highest frequency untouched, lowest divided by the full factor.
        assert_eq!(f[0], 1.0);
        assert_eq!(f[7], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn absent_without_llama3_scaling() {
        let hf = serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0}});
        let cfg_json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 32
        });
        let cfg = ModelConfig::from_hf_config(&cfg_json).unwrap();
        assert_eq!(llama3_rope_factors(&hf, &cfg).unwrap(), None);
    }
}
