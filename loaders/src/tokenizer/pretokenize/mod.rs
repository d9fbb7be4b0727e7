//! Pre-tokenization for byte-level BPE: the text is cut into words by the rules of the model's
//! `tokenizer.ggml.pre`, exactly as llama.cpp's `unicode_regex_split` cuts it, and BPE merges
//! never cross a cut.

mod custom;
mod patterns;
mod stl;

use crate::tokenizer::error::TokenizerError;
use crate::tokenizer::unicode::{self, Flags};

/// How a `tokenizer.ggml.pre` value changes llama.cpp's vocabulary settings besides the split
/// rules (`llama_vocab::impl::load`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    rules: &'static [&'static str],
    /// A word that is itself a token is not merged (Llama 3's `ignore_merges`).
    pub ignore_merges: bool,
    /// Detokenization tidies spaces before punctuation (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
    /// Add BOS unless the file says otherwise.
    pub add_bos: bool,
    /// The vocabulary has no BOS unless the file names one.
    pub no_default_bos: bool,
}

impl PreConfig {
    /// The settings for `name`; `None` if llama.cpp does not know it or it is not one this
    /// crate reproduces (Kimi-K2's and SuperBPE's splitters, raw-UTF-8 BPE such as Gemma 4's).
    pub fn from_name(name: &str) -> Option<PreConfig> {
        use patterns::*;
        let base = |rules| PreConfig {
            rules,
            ignore_merges: false,
            clean_spaces: true,
            add_bos: false,
            no_default_bos: false,
        };
        let unclean = |rules| PreConfig { clean_spaces: false, ..base(rules) };
        Some(match name {
            "" | "default" => base(DEFAULT),
            "minicpm5" => PreConfig { ignore_merges: true, ..base(MINICPM5) },
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2" | "jina-v5-nano" => PreConfig { ignore_merges: true, add_bos: true, ..base(LLAMA3) },
            "deepseek-llm" => unclean(DEEPSEEK_LLM),
            "deepseek-coder" => unclean(DEEPSEEK_CODER),
            "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => unclean(DEEPSEEK3),
            "spark2_5" => unclean(SPARK2_5),
            "youtu" => PreConfig { ignore_merges: true, ..unclean(YOUTU) },
            "falcon" => base(FALCON),
            "mpt" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
            | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
            | "olmo" | "jais" | "exaone4" => base(GPT2),
            "trillion" | "granite-docling" => unclean(GPT2),
            "jais-2" => base(JAIS2),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => base(STARCODER),
            "command-r" | "smollm" => unclean(STARCODER),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "grok-2" | "solar-open" => {
                unclean(QWEN2)
            }
            "stablelm2" | "megrez" => base(QWEN2),
            "qwen35" => unclean(QWEN35),
            "dbrx" | "smaug-bpe" => base(LLAMA3),
            "poro-chat" => unclean(BLOOM),
            "bloom" | "gpt3-finnish" => base(BLOOM),
            "chatglm-bpe" => PreConfig { no_default_bos: true, ..base(LLAMA3) },
            "glm4" | "glm5" => PreConfig { no_default_bos: true, ignore_merges: true, ..base(LLAMA3) },
            "viking" => unclean(VIKING),
            "tekken" => PreConfig { ignore_merges: true, add_bos: true, ..unclean(TEKKEN) },
            "exaone-moe" => base(EXAONE_MOE),
            "chameleon" => PreConfig { add_bos: true, ..unclean(CHAMELEON) },
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => unclean(GPT4O),
            "granite-embed-multi-97m" => PreConfig { ignore_merges: true, ..unclean(GRANITE_EMB_MULTI) },
            "tiny_aya" | "cohere2moe" => unclean(TINY_AYA),
            "bailingmoe" | "bailingmoe2" | "llada-moe" => unclean(BAILINGMOE),
            "seed-coder" => unclean(SEED_CODER),
            "ufakzeka" => unclean(UFAKZEKA),
            "afmoe" => unclean(AFMOE),
            "laguna" => unclean(LAGUNA),
            _ => return None,
        })
    }
}

/// One split rule, in the form that runs it.
#[derive(Debug)]
enum Rule {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Newlines,
    AfmoeDigits,
    Stl(stl::StlRule),
}

impl Rule {
    /// The hand-coded splitter for a rule text llama.cpp recognises (`unicode_regex_split_custom`),
    /// or the rule run as a regex.
    fn new(pattern: &str) -> Result<Rule, TokenizerError> {
        use patterns::*;
        let rule = match pattern {
            p if p == GPT2[0] => Rule::Gpt2,
            p if p == LLAMA3[0] => Rule::Llama3,
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" => {
                Rule::Llama3
            }
            p if p == QWEN2[0] => Rule::Qwen2,
            p if p == QWEN35[0] => Rule::Qwen35,
            p if p == LAGUNA[0] => Rule::Newlines,
            p if p == AFMOE[0] || p == TINY_AYA[0] => Rule::AfmoeDigits,
            p => Rule::Stl(stl::StlRule::new(p)?),
        };
        Ok(rule)
    }
}

/// The split rules of one pre-tokenizer, compiled.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    rules: Vec<Rule>,
}

impl PreTokenizer {
    pub fn new(config: &PreConfig) -> Result<PreTokenizer, TokenizerError> {
        let rules = config.rules.iter().map(|p| Rule::new(p)).collect::<Result<_, _>>()?;
        Ok(PreTokenizer { rules })
    }

    /// Cuts `text` into words, each returned as UTF-8 (malformed input already replaced by
    /// U+FFFD, as llama.cpp's decoder does).
    pub fn split(&self, text: &[u8]) -> Vec<Vec<u8>> {
        let cpts = unicode::decode_utf8(text);
        let flags: Vec<Flags> = cpts.iter().map(|&c| unicode::flags(c)).collect();
        let mut pieces = vec![cpts.len()];
        let mut haystack = String::new();
        for rule in &self.rules {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            let mut start = 0;
            for &len in &pieces {
                let (c, f) = (&cpts[start..start + len], &flags[start..start + len]);
                match rule {
                    Rule::Gpt2 => custom::gpt2(c, f, &mut next),
                    Rule::Llama3 => custom::llama3(c, f, &mut next),
                    Rule::Qwen2 => custom::qwen2(c, f, &mut next),
                    Rule::Qwen35 => custom::qwen35(c, f, &mut next),
                    Rule::Newlines => custom::newlines(c, &mut next),
                    Rule::AfmoeDigits => custom::afmoe_digits(c, f, &mut next),
                    Rule::Stl(re) => {
                        haystack.clear();
                        haystack.extend(c.iter().map(|&cpt| re.input_char(cpt)));
                        re.split(&haystack, &mut next);
                    }
                }
                start += len;
            }
            pieces = next;
        }

        let mut words = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for len in pieces {
            let mut word = Vec::with_capacity(len);
            for &c in &cpts[start..start + len] {
                unicode::push_utf8(&mut word, c);
            }
            words.push(word);
            start += len;
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let config = PreConfig::from_name(pre).unwrap();
        let p = PreTokenizer::new(&config).unwrap();
        p.split(text.as_bytes()).into_iter().map(|w| String::from_utf8(w).unwrap()).collect()
    }

    #[test]
    fn every_known_rule_compiles() {
        let names = [
            "default",
            "minicpm5",
            "llama-bpe",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "youtu",
            "falcon",
            "gpt-2",
            "jais-2",
            "starcoder",
            "smollm",
            "qwen2",
            "qwen35",
            "dbrx",
            "bloom",
            "chatglm-bpe",
            "viking",
            "tekken",
            "exaone-moe",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "tiny_aya",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "afmoe",
            "laguna",
        ];
        for name in names {
            let config = PreConfig::from_name(name).unwrap();
            PreTokenizer::new(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(PreConfig::from_name("kimi-k2").is_none());
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(words("smollm", "ab 123"), ["ab", " ", "1", "2", "3"]);
    }

    #[test]
    fn gpt4o_treats_non_ascii_letters_as_either_case() {
        // The real pattern keeps "ÀB" (two capitals) together; llama.cpp's collapsed text
        // lets À end a lower-case run.
        assert_eq!(words("gpt-4o", "HelloWorld ÀB Été"), ["Hello", "World", " À", "B", " Été"]);
    }
}
