// dump.cpp - reference ("golden") logits / greedy / tokenizer dumper built on libllama.
//
// Build (see README.md):
//   g++ -O2 -std=c++17 dump.cpp -o dump
//       -I../llama.cpp/include -I../llama.cpp/ggml/include -I../llama.cpp/vendor
//       -L../llama.cpp/build/bin -lllama -lggml -lggml-base -Wl,-rpath,../llama.cpp/build/bin
//   (one command line)
//
// Modes:
//   dump eval -m MODEL -o OUTDIR -c CASE [-n N] [--topk K] [--full-max-vocab V]
//             (--ids 1,2,3 | --text STRING | --text-file PATH)
//             [--serial-prompt] [--kv-f32]     (diagnostics only, not used for the fixtures)
//       Evaluates the prompt in ONE llama_decode call with logits requested for every prompt
//       position, then greedy-decodes N tokens one at a time (argmax, lowest id wins ties,
//       no EOG stopping). Every generated token, including the last one, is fed back, so
//       there are n_prompt + N logits rows. Writes OUTDIR/CASE.json and, when
//       n_vocab <= V (default 60000), OUTDIR/CASE.f32 with all rows; otherwise the JSON
//       gets the top-K (default 64) (id, logit) pairs per row instead.
//
//   dump eval ... --then-ids 4,5,6 [--then-n M]
//       A second turn (wllm addition, for recurrent-state reuse fixtures): after the N greedy
//       tokens, the ids are evaluated in ONE more llama_decode call on top of the same sequence
//       (logits for every position), then M (default N) more greedy tokens. The JSON then
//       describes the whole run as one case: prompt_ids = prompt ++ greedy1 ++ then_ids,
//       greedy_ids = the second greedy run, and "turns" lists both turns' prompt and greedy ids.
//       Row r is still the output at position r of prompt_ids ++ greedy_ids.
//
//   dump eval ... --kv-type q8_0|q4_0
//       (wllm addition, for the quantized-KV fixtures) K and V of that type, with flash
//       attention on (llama.cpp needs it for a quantized V).
//
//   dump tokenize -m MODEL -i STRINGS.json -o OUT.json
//       STRINGS.json is a JSON list of strings. OUT.json is a list of {"text", "ids"} with ids
//       from llama_tokenize(add_special=true, parse_special=false).

#include "llama.h"
#include "ggml.h"
#include "nlohmann/json.hpp"

#include <algorithm>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using json = nlohmann::ordered_json;

static void quiet_log(enum ggml_log_level level, const char * text, void * /*ud*/) {
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static std::string basename_of(const std::string & p) {
    const size_t s = p.find_last_of('/');
    return s == std::string::npos ? p : p.substr(s + 1);
}

static std::string read_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path.c_str());
        exit(1);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static bool valid_utf8(const std::string & s) {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        const unsigned char c = (unsigned char) s[i];
        int len = 0;
        if (c < 0x80) { len = 1; }
        else if ((c >> 5) == 0x6) { len = 2; }
        else if ((c >> 4) == 0xE) { len = 3; }
        else if ((c >> 3) == 0x1E) { len = 4; }
        else { return false; }
        if (i + len > n) { return false; }
        for (int k = 1; k < len; ++k) {
            if ((((unsigned char) s[i + k]) >> 6) != 0x2) { return false; }
        }
        i += len;
    }
    return true;
}

static std::string to_hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) {
        out.push_back(d[c >> 4]);
        out.push_back(d[c & 15]);
    }
    return out;
}

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text) {
    // add_special = true  -> BOS/EOS added exactly as the model's metadata asks (llama.cpp default)
    // parse_special = false -> special-token text in the input is treated as plain text
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, false);
    if (n < 0) {
        n = -n;
    }
    std::vector<llama_token> toks(n);
    const int r = llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), (int32_t) toks.size(), true, false);
    if (r < 0) {
        fprintf(stderr, "tokenize failed\n");
        exit(1);
    }
    toks.resize(r);
    return toks;
}

static std::string detokenize(const llama_vocab * vocab, const std::vector<llama_token> & ids) {
    if (ids.empty()) {
        return "";
    }
    std::vector<char> buf(ids.size() * 32 + 64);
    // remove_special = false, unparse_special = false (control tokens render as empty text)
    int n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), buf.data(), (int32_t) buf.size(), false, false);
    if (n < 0) {
        buf.resize(-n);
        n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), buf.data(), (int32_t) buf.size(), false, false);
    }
    return std::string(buf.data(), n);
}

static std::string piece(const llama_vocab * vocab, llama_token id) {
    char buf[256];
    int n = llama_token_to_piece(vocab, id, buf, sizeof(buf), 0, false);
    if (n < 0) {
        return "";
    }
    return std::string(buf, n);
}

static bool g_kv_f32 = false; // diagnostics only: F32 KV cache instead of the default F16
static ggml_type g_kv_type = GGML_TYPE_COUNT; // --kv-type: quantized K and V (flash attention on)

struct model_ctx {
    llama_model   * model = nullptr;
    llama_context * ctx   = nullptr;
    const llama_vocab * vocab = nullptr;
};

static model_ctx load(const std::string & path, bool need_ctx) {
    model_ctx m;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers    = 0;      // CPU only
    mp.use_extra_bufts = false;  // no CPU weight repacking: plain ggml quantized dot kernels
    m.model = llama_model_load_from_file(path.c_str(), mp);
    if (!m.model) {
        fprintf(stderr, "failed to load model %s\n", path.c_str());
        exit(1);
    }
    m.vocab = llama_model_get_vocab(m.model);
    if (need_ctx) {
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx           = 512;
        cp.n_batch         = 512;
        cp.n_ubatch        = 512;
        cp.n_seq_max       = 1;
        cp.n_threads       = 2;
        cp.n_threads_batch = 2;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.type_k          = g_kv_f32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
        cp.type_v          = g_kv_f32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
        if (g_kv_type != GGML_TYPE_COUNT) {
            cp.type_k          = g_kv_type;
            cp.type_v          = g_kv_type;
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        }
        cp.no_perf         = true;
        m.ctx = llama_init_from_model(m.model, cp);
        if (!m.ctx) {
            fprintf(stderr, "failed to create context\n");
            exit(1);
        }
    }
    return m;
}

static std::vector<llama_token> parse_ids(const std::string & s) {
    std::vector<llama_token> ids;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (!item.empty()) {
            ids.push_back((llama_token) std::stol(item));
        }
    }
    return ids;
}

static int argmax(const float * row, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i) {
        if (row[i] > row[best]) {
            best = i;
        }
    }
    return best;
}

static double logsumexp(const float * row, int n) {
    float mx = row[0];
    for (int i = 1; i < n; ++i) mx = std::max(mx, row[i]);
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += std::exp((double) row[i] - (double) mx);
    return (double) mx + std::log(s);
}

static json topk(const float * row, int n, int k) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    k = std::min(k, n);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
        if (row[a] != row[b]) return row[a] > row[b];
        return a < b;
    });
    json out = json::array();
    for (int i = 0; i < k; ++i) {
        out.push_back(json::array({idx[i], row[idx[i]]}));
    }
    return out;
}

static void decode_or_die(llama_context * ctx, llama_batch & batch) {
    const int r = llama_decode(ctx, batch);
    if (r != 0) {
        fprintf(stderr, "llama_decode failed: %d\n", r);
        exit(1);
    }
}

static int cmd_eval(int argc, char ** argv) {
    std::string model_path, outdir = ".", case_name = "case", text, ids_str, then_ids_str;
    bool have_text = false, have_ids = false;
    bool serial_prompt = false; // diagnostics only: feed the prompt one token per llama_decode
    int n_gen = 32, k_top = 64, full_max_vocab = 60000, n_then = -1;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { fprintf(stderr, "missing value for %s\n", a.c_str()); exit(1); }
            return argv[++i];
        };
        if (a == "-m") model_path = next();
        else if (a == "-o") outdir = next();
        else if (a == "-c") case_name = next();
        else if (a == "-n") n_gen = std::stoi(next());
        else if (a == "--topk") k_top = std::stoi(next());
        else if (a == "--full-max-vocab") full_max_vocab = std::stoi(next());
        else if (a == "--text") { text = next(); have_text = true; }
        else if (a == "--text-file") { text = read_file(next()); have_text = true; }
        else if (a == "--ids") { ids_str = next(); have_ids = true; }
        else if (a == "--then-ids") then_ids_str = next();
        else if (a == "--then-n") n_then = std::stoi(next());
        else if (a == "--serial-prompt") serial_prompt = true;
        else if (a == "--kv-f32") g_kv_f32 = true;
        else if (a == "--kv-type") {
            const std::string t = next();
            if (t == "q8_0") g_kv_type = GGML_TYPE_Q8_0;
            else if (t == "q4_0") g_kv_type = GGML_TYPE_Q4_0;
            else { fprintf(stderr, "--kv-type: q8_0 or q4_0, not %s\n", t.c_str()); return 1; }
        }
        else { fprintf(stderr, "unknown arg %s\n", a.c_str()); return 1; }
    }
    if (model_path.empty() || have_text == have_ids) {
        fprintf(stderr, "need -m and exactly one of --text/--text-file/--ids\n");
        return 1;
    }

    model_ctx m = load(model_path, true);
    const int n_vocab = llama_vocab_n_tokens(m.vocab);

    std::vector<llama_token> prompt = have_text ? tokenize(m.vocab, text) : parse_ids(ids_str);
    const int n_prompt = (int) prompt.size();
    const std::vector<llama_token> then_ids = parse_ids(then_ids_str);
    if (n_then < 0) {
        n_then = then_ids.empty() ? 0 : n_gen;
    }
    for (auto t : then_ids) {
        if (t < 0 || t >= n_vocab) { fprintf(stderr, "token id %d out of range\n", t); return 1; }
    }
    if (n_prompt == 0 || n_prompt + n_gen + (int) then_ids.size() + n_then > 512) {
        fprintf(stderr, "bad prompt length %d\n", n_prompt);
        return 1;
    }
    for (auto t : prompt) {
        if (t < 0 || t >= n_vocab) { fprintf(stderr, "token id %d out of range\n", t); return 1; }
    }

    const bool full = n_vocab <= full_max_vocab;
    std::vector<float> rows;            // [n_prompt + n_gen][n_vocab] when full
    json top_rows = json::array();
    json lse = json::array();
    json row_argmax = json::array();
    json row_margin = json::array();
    auto record = [&](const float * row) {
        lse.push_back(logsumexp(row, n_vocab));
        const int a = argmax(row, n_vocab);
        float second = -INFINITY;
        for (int i = 0; i < n_vocab; ++i) {
            if (i != a && row[i] > second) second = row[i];
        }
        row_argmax.push_back(a);
        row_margin.push_back(row[a] - second);
        if (full) {
            rows.insert(rows.end(), row, row + n_vocab);
        } else {
            top_rows.push_back(topk(row, n_vocab, k_top));
        }
    };

    // 1) whole prompt in a single batch, logits for every position
    llama_batch batch = llama_batch_init(std::max({n_prompt, (int) then_ids.size(), 1}), 0, 1);
    if (!serial_prompt) {
        batch.n_tokens = n_prompt;
        for (int i = 0; i < n_prompt; ++i) {
            batch.token[i]     = prompt[i];
            batch.pos[i]       = i;
            batch.n_seq_id[i]  = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i]    = 1;
        }
        decode_or_die(m.ctx, batch);
        for (int i = 0; i < n_prompt; ++i) {
            const float * row = llama_get_logits_ith(m.ctx, i);
            if (!row) { fprintf(stderr, "no logits for prompt row %d\n", i); return 1; }
            record(row);
        }
    } else {
        for (int i = 0; i < n_prompt; ++i) {
            batch.n_tokens     = 1;
            batch.token[0]     = prompt[i];
            batch.pos[0]       = i;
            batch.n_seq_id[0]  = 1;
            batch.seq_id[0][0] = 0;
            batch.logits[0]    = 1;
            decode_or_die(m.ctx, batch);
            record(llama_get_logits_ith(m.ctx, 0));
        }
    }

    // 2) greedy decode, one token per llama_decode call
    std::vector<llama_token> gen;
    int first_eog = -1;
    llama_token next_tok = argmax(llama_get_logits_ith(m.ctx, serial_prompt ? 0 : n_prompt - 1), n_vocab);
    for (int k = 0; k < n_gen; ++k) {
        gen.push_back(next_tok);
        if (first_eog < 0 && llama_vocab_is_eog(m.vocab, next_tok)) {
            first_eog = k;
        }
        batch.n_tokens     = 1;
        batch.token[0]     = next_tok;
        batch.pos[0]       = n_prompt + k;
        batch.n_seq_id[0]  = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0]    = 1;
        decode_or_die(m.ctx, batch);
        const float * row = llama_get_logits_ith(m.ctx, 0);
        if (!row) { fprintf(stderr, "no logits for gen row %d\n", k); return 1; }
        record(row);
        next_tok = argmax(row, n_vocab);
    }

    // 3) optional second turn: its ids as one batch on top of the sequence, then greedy again
    std::vector<llama_token> gen1;
    if (!then_ids.empty()) {
        gen1 = gen;
        gen.clear();
        first_eog = -1;
        const int n_then_ids = (int) then_ids.size();
        const int pos0 = n_prompt + n_gen;
        batch.n_tokens = n_then_ids;
        for (int i = 0; i < n_then_ids; ++i) {
            batch.token[i]     = then_ids[i];
            batch.pos[i]       = pos0 + i;
            batch.n_seq_id[i]  = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i]    = 1;
        }
        decode_or_die(m.ctx, batch);
        for (int i = 0; i < n_then_ids; ++i) {
            const float * row = llama_get_logits_ith(m.ctx, i);
            if (!row) { fprintf(stderr, "no logits for second-turn row %d\n", i); return 1; }
            record(row);
        }
        next_tok = argmax(llama_get_logits_ith(m.ctx, n_then_ids - 1), n_vocab);
        for (int k = 0; k < n_then; ++k) {
            gen.push_back(next_tok);
            if (first_eog < 0 && llama_vocab_is_eog(m.vocab, next_tok)) {
                first_eog = k;
            }
            batch.n_tokens     = 1;
            batch.token[0]     = next_tok;
            batch.pos[0]       = pos0 + n_then_ids + k;
            batch.n_seq_id[0]  = 1;
            batch.seq_id[0][0] = 0;
            batch.logits[0]    = 1;
            decode_or_die(m.ctx, batch);
            const float * row = llama_get_logits_ith(m.ctx, 0);
            if (!row) { fprintf(stderr, "no logits for second-turn gen row %d\n", k); return 1; }
            record(row);
            next_tok = argmax(row, n_vocab);
        }
    }
    llama_batch_free(batch);

    // with a second turn the case is "everything given so far" -> the second greedy run
    std::vector<llama_token> all_prompt = prompt;
    if (!then_ids.empty()) {
        all_prompt.insert(all_prompt.end(), gen1.begin(), gen1.end());
        all_prompt.insert(all_prompt.end(), then_ids.begin(), then_ids.end());
    }
    const int n_all_prompt = (int) all_prompt.size();
    const int n_all_gen = (int) gen.size();

    const std::string gtext = detokenize(m.vocab, gen);
    json pieces = json::array();
    json pieces_hex = json::array();
    for (auto t : gen) {
        const std::string p = piece(m.vocab, t);
        pieces.push_back(p);
        pieces_hex.push_back(to_hex(p));
    }

    json j;
    j["model"] = basename_of(model_path);
    if (have_text) {
        j["prompt_text"] = text;
    }
    j["prompt_ids"] = all_prompt;
    j["n_prompt"] = n_all_prompt;
    j["n_gen"] = n_all_gen;
    j["greedy_ids"] = gen;
    j["greedy_text"] = gtext;
    j["greedy_text_valid_utf8"] = valid_utf8(gtext);
    j["greedy_text_hex"] = to_hex(gtext);
    j["greedy_pieces"] = pieces;
    j["greedy_pieces_hex"] = pieces_hex;
    j["first_eog_index"] = first_eog;
    j["n_vocab"] = n_vocab;
    j["n_rows"] = n_all_prompt + n_all_gen;
    j["row_argmax"] = row_argmax;
    j["row_margin"] = row_margin;
    j["logsumexp"] = lse;
    if (!then_ids.empty()) {
        json turns = json::array();
        turns.push_back({{"prompt_ids", prompt}, {"greedy_ids", gen1}});
        turns.push_back({{"prompt_ids", then_ids}, {"greedy_ids", gen}});
        j["turns"] = turns;
    }
    if (full) {
        j["logits_file"] = case_name + ".f32";
        j["logits_layout"] = "f32le[n_rows][n_vocab]";
    } else {
        j["logits_file"] = nullptr;
        j["top_k"] = k_top;
        j["top_logits"] = top_rows;
    }

    if (full) {
        const std::string fpath = outdir + "/" + case_name + ".f32";
        FILE * f = fopen(fpath.c_str(), "wb");
        if (!f) { fprintf(stderr, "cannot write %s\n", fpath.c_str()); return 1; }
        fwrite(rows.data(), sizeof(float), rows.size(), f);  // x86-64: little-endian
        fclose(f);
    }
    {
        const std::string jpath = outdir + "/" + case_name + ".json";
        std::ofstream f(jpath, std::ios::binary);
        f << j.dump(1, ' ', false, json::error_handler_t::replace) << "\n";
    }
    fprintf(stderr, "%s: n_prompt=%d greedy=%s\n", case_name.c_str(), n_all_prompt, gtext.c_str());

    llama_free(m.ctx);
    llama_model_free(m.model);
    return 0;
}

static int cmd_tokenize(int argc, char ** argv) {
    std::string model_path, in_path, out_path;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "missing value for %s\n", a.c_str()); return 1; }
        if (a == "-m") model_path = argv[++i];
        else if (a == "-i") in_path = argv[++i];
        else if (a == "-o") out_path = argv[++i];
        else { fprintf(stderr, "unknown arg %s\n", a.c_str()); return 1; }
    }
    model_ctx m = load(model_path, false);
    json in = json::parse(read_file(in_path));
    json out = json::array();
    for (const auto & s : in) {
        const std::string text = s.get<std::string>();
        json e;
        e["text"] = text;
        e["ids"] = tokenize(m.vocab, text);
        out.push_back(e);
    }
    std::ofstream f(out_path, std::ios::binary);
    f << out.dump(1, ' ', false, json::error_handler_t::strict) << "\n";
    llama_model_free(m.model);
    return 0;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    if (argc < 2) {
        fprintf(stderr, "usage: %s eval|tokenize ...\n", argv[0]);
        return 1;
    }
    const std::string cmd = argv[1];
    int rc = 1;
    if (cmd == "eval") rc = cmd_eval(argc, argv);
    else if (cmd == "tokenize") rc = cmd_tokenize(argc, argv);
    else fprintf(stderr, "unknown command %s\n", cmd.c_str());
    llama_backend_free();
    return rc;
}
