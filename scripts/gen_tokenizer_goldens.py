#!/usr/bin/env python3
"""Regenerate tests/data/tokenizer/extra-<model>.json with llama.cpp's `llama-tokenize`.

Build the tool from the pinned llama.cpp sources (CPU only), e.g.
    cmake -B /tmp/llama-build -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
    cmake --build /tmp/llama-build --target llama-tokenize -j2
then run
    gen_tokenizer_goldens.py /tmp/llama-build/bin/llama-tokenize <model.gguf> <out.json>

Each string is written to a file and tokenized with `--ids --no-escape`, once with
`--no-parse-special` (as the public fixtures: add_special on, parse_special off) and, for the
chat-style strings, once with special tokens parsed.
"""
import json
import os
import subprocess
import sys
import tempfile

COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

PARAGRAPH = (
    "Tokenizers split text into pieces. This paragraph is deliberately long, with commas, "
    "semicolons; colons: and (parentheses) so that many merges happen in one call, and it ends "
    "with a question? And an exclamation! Then 42 numbers, 3.5 decimals and 1,000,000 separators."
)

TEXTS = [
    # English
    "Hello, World!",
    "The quick brown fox jumps over the lazy dog",
    "I can't believe it's not butter.",
    "It's 5 o'clock; we're late, they'll wait, I'd go, you've seen, I'm here.",
    "IT'S WE'RE THEY'LL I'D YOU'VE I'M DON'T",
    "'s 'S 're 'RE 'Ve 'll 'LL 'd 'D 'm 'M 't",
    "rock'n'roll o'neill ''quoted'' '",
    PARAGRAPH,
    # spaces, newlines, tabs
    " leading",
    "   three leading",
    "trailing   ",
    "end" + " " * 40,
    "a  b   c    d     e",
    "          ten spaces",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\r\n",
    "line1\r\nline2\r\n\r\nline4",
    "\t\t\tindented\ttab",
    "mixed \n \n\t\n  end",
    "  \n  \t  ",
    "x\u000by\u000cz",
    # digits
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "3.14159 -2.5e10 +7",
    "1,234,567.89",
    "2024-01-01T12:34:56Z",
    "0x1F 0b1010 0o17",
    "٣٤٥ ۷۸۹ १२३ １２３",
    "²³ ½ ¾ Ⅷ ⑤",
    "v1.2.3-rc4",
    # punctuation and quotes
    "Hello!!! Really??? Yes... No…",
    "\"double\" 'single' `back` «guillemets» „low“ ‘curly’ “curly”",
    "(a) [b] {c} <d> </e>",
    "--- *** ___ === ~~~ ^^^",
    "a/b\\c|d&e%f$g#h@i",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "¿Qué? ¡Sí! § © ® ° ± × ÷ € £ ¥",
    # code
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    '<div class="x"><b>bold</b> &amp; <i>it</i></div>',
    "#include <stdio.h>\nint main(void) { return 0; }",
    "$ ls -la | grep foo && echo \"done\" > /dev/null 2>&1",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "if (x != y && y <= z || !flag) { x += 1; } // comment",
    "    indented_code = [i**2 for i in range(10)]",
    # accented Latin and combining marks
    "Café naïve résumé façade Ångström",
    "Ça va? Où est l'hôtel? À bientôt!",
    "Fußgängerübergänge ÄÖÜ äöü ß ẞ",
    "Ørsted Ærø Łódź Kraków Gdańsk Dvořák Škoda",
    "İstanbul'da ışık Iı İi",
    "e\u0301 a\u0300\u0301\u0302 n\u0303",
    "\u0301abc",
    "\u0301",
    # CJK
    "你好，世界！",
    "東京は日本の首都です。",
    "한국어 텍스트입니다.",
    "中文English混合mixed文本123",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "漢字ひらがなカタカナｶﾀｶﾅ",
    # other scripts
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "Привет, мир! ЖЖЖ",
    "Καλημέρα κόσμε σς",
    "გამარჯობა ሰላም Բարեւ",
    # emoji
    "😀",
    "👍🏽👍🏿 thumbs",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 ❤️‍🔥",
    "🇺🇸🇫🇷🇯🇵",
    "1️⃣2️⃣#️⃣",
    "I ❤️ NY ☕️",
    "🧑🏿‍💻 coding 🤖🚀✨",
    # invisible and unusual whitespace
    "zero\u200bwidth",
    "a\u200db\u200cc",
    "\ufeffBOM at start",
    "soft\u00adhyphen",
    "nb\u00a0sp em\u2003sp ideo\u3000sp",
    "NEL\u0085char\u2028sep",
    # control-token-looking text (parse_special off)
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos></s><s><unk><pad><mask>",
    "<|endoftext|>",
    "<0x0A> ▁ ▁▁ Ġ Ċ",
    "<table><tr><td>1</td></tr></table>",
    "[multimodal]<start_of_image><end_of_image>",
    "<repo_name>x<file_sep>y<unused0>",
    "<|im_start|",
    # long words
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 100,
    "antidisestablishmentarianism" * 3,
    "ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ",
    # odd codepoints
    "\x00nul\x07bell\x7fdel",
    "\ue000 private \u0378 unassigned",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐐷",
    # empty
    "",
]

# Chat-style strings also tokenized with special tokens parsed.
SPECIAL_TEXTS = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<bos><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n",
    "<|endoftext|>text<|endoftext|>",
    "a <|im_end|> b <end_of_turn> c </s> d",
    "  <start_of_turn>  spaced  <end_of_turn>  ",
    "<table>\n\t\t<td>x</td>\n</table>",
    "<|im_start|<|im_start|>|>",
    "",
]


def tokenize(tool: str, model: str, text: str, parse_special: bool) -> list:
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        args = [tool, "-m", model, "-f", path, "--ids", "--no-escape", "--log-disable"]
        if not parse_special:
            args.append("--no-parse-special")
        out = subprocess.run(args, capture_output=True, check=True).stdout.decode()
    finally:
        os.unlink(path)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    tool, model, out = sys.argv[1:4]
    name = os.path.basename(model)
    flags = "--ids --no-escape --log-disable"
    doc = {
        "provenance": (
            f"llama-tokenize from llama.cpp {COMMIT} (CPU build), `-m {name} -f <text file> {flags}`; "
            "`cases`: with --no-parse-special (add_special on, i.e. BOS as the model asks; "
            "parse_special off), `cases_parse_special`: without it (parse_special on). "
            "Generated by scripts/gen_tokenizer_goldens.py."
        ),
        "model": name,
        "cases": [{"text": t, "ids": tokenize(tool, model, t, False)} for t in TEXTS],
        "cases_parse_special": [{"text": t, "ids": tokenize(tool, model, t, True)} for t in SPECIAL_TEXTS],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
