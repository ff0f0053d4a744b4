"""Regenerate tests/lsr/data/lucene_tokens.json: tricky strings and the terms Lucene gives them.

The terms come from Lucene itself, through Anserini's default analyzer (the analysis of its
BM25 indexes), run by ``LuceneAnalysis.java`` beside this script. It needs the Anserini fatjar,
which the pyserini sdist on PyPI bundles, and a Java 21+ runtime::

    pip download pyserini --no-deps --no-binary :all: -d /tmp/pyserini
    tar xzf /tmp/pyserini/pyserini-*.tar.gz -C /tmp/pyserini
    python scripts/lucene/make_fixture.py \
        --jar /tmp/pyserini/pyserini-*/pyserini/resources/jars/anserini-*-fatjar.jar \
        --java /usr/lib/jvm/temurin-25-jdk-amd64/bin/java

The strings are written out here (none is copied from a dataset): contractions, acronyms,
numbers, hyphens, URLs, e-mail addresses, possessives, scripts other than Latin, emoji, long
tokens; random joins of such pieces with every kind of separator (fixed seed); and words built
from stems and suffixes so that every rule of the Porter stemmer is exercised. The fixture
also holds the document length Lucene's BM25 scores with (its one-byte norm) for 0..LENGTHS.
``--check FOLDER...`` compares instead every document and query of BEIR folders.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parents[1] / "tests" / "lsr" / "data" / "lucene_tokens.json"
LENGTHS = 5000

CASES = [
    "I'd don't can't won't shouldn't y'all o'clock rock'n'roll ma'am",
    "I’d don’t it’s John’s JOHN'S James' the dogs' bones O'Neil’S ＇s x＇s",
    "e.g. i.e. etc. U.S. U.S.A. Ph.D. a.m. p.m. h.c A.B.C.D. u.s.-based",
    "1.5 3,000 3,000.50 1,2,3 10:30 2020-01-02 1e-5 -7 +8 0.5% $12.99 €5 5€ 100km 3x 4×4",
    "½ ¾ ² ³ ١٢٣ ０１２３ Ⅻ ⅷ 1st 2nd 3rd 4th 10th 1960s '90s",
    "state-of-the-art e-mail x-ray T-cell IL-6 TNF-α β-catenin COVID-19 SARS-CoV-2 p53 C6H12O6",
    "http://example.com/a_b/c.html?x=1&y=2#frag https://www.nih.gov ftp://files.org/x.tar.gz",
    "foo@bar.com first.last+tag@sub.example.co.uk @mention #hashtag user_name __init__ a_b_c",
    "/usr/local/bin C:\\Windows\\System32 ../x/y.txt file.tar.gz v1.2.3 3.14159 192.168.0.1",
    "naïve café résumé coöperate Zürich façade Ångström Øresund Łódź Straße İstanbul ΣΑΣ Σίσυφος",
    "Москва на́ш язы́к Ελληνικά عربي العربية עברית צה\"ל מ'דע हिन्दी देवनागरी বাংলা தமிழ்",
    "東京タワー 日本語のテキスト です ひらがな カタカナ ｶﾀｶﾅ 中文字符 한국어 텍스트 서울특별시",
    "ไทยภาษา ภาษาไทย ລາວ မြန်မာ ខ្មែរ",
    "😀 👍🏽 🇺🇸 ❤ ❤️ © ™ ☺ ☺️ #️⃣ 1️⃣ 👨‍👩‍👧 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ✈️ ⚽ 🤷‍♀️ a😀b 😀😀",
    "soft\u00adhyphen zero\u200bwidth join\u200dner non\u200cjoiner word\u2060joiner bi\ufeffdi",
    "tab\tsep new\nline cr\r\nlf nbsp\u00a0here thin\u2009space ideographic\u3000space",
    "s S a A I the The THE and AND is it's that's there's they're we've",
    "anthropology anthropological generalizations oscillators controlling hopping sky",
    "running runs ran easily fairly happiness relational conditional digitizer",
    "'quoted' \"double\" (paren) [bracket] {brace} <angle> «guillemets» „low“ —dash– …",
    "end. end, end; end: end! end? end... end-- -start .start 'start _start _ __ ___",
    "a.b.c 1.2.c a.1 1.a a-1 1-a a'1 1'a a,1 1,a a:b 1:2 a/b 1/2 a&b a+b a=b",
    "x" * 300,
    "ab" * 200 + ".cd",
    "1" * 260 + " " + "2.5" * 100,
    "",
    "   ",
    "!!! ??? ... --- *** ### $$$ %%% ^^^",
    "ALLCAPS CamelCase mixedCASE iPhone eBay McDonald's O'REILLY'S",
    "co-operate re-enter pre-1990 mid-2000s non-trivial well-known",
    "Ü ü Ö ö İ ı Ǆ ǅ ǆ ß ẞ ﬁ ﬂ ﬀ Ω Ω K",
]

PIECES = [
    "word", "Word", "WORD", "don't", "I'd", "e.g", "U.S", "1.5", "3,000", "42", "x",
    "s", "'s", "’s", "a", "the", "Running", "generalization", "café", "naïve", "東京",
    "ひらがな", "カタカナ", "한국", "ไทย", "😀", "👍🏽", "α", "β-catenin", "IL-6", "_",
    "foo@bar.com", "http://a.b/c", "v1.2", "½", "١٢٣", "０１", "ｶﾀ", "עב", "ру",
]  # fmt: skip
SEPARATORS = [
    " ", "", "-", ".", "'", "’", ",", ":", "_", "/", "@", "&", "+", "(", ")", "\"", ";",
    "!", "?", "\t", "\n", "\u00ad", "\u200b", "\u200d", "#", "$", "%", "*", "=", "~",
    "|", "\\", "…", "—", "·", "・",
]  # fmt: skip

STEMS = [
    "anthropolog", "relat", "condit", "ration", "valen", "digit", "conform", "radic",
    "differ", "vile", "analog", "vietnam", "predic", "oper", "feud", "decis", "hope",
    "callous", "formal", "sensit", "sensib", "tripl", "electr", "good", "reviv", "allow",
    "infer", "airlin", "gyroscop", "adjust", "defens", "irrit", "replac", "depend",
    "adopt", "homolog", "commun", "activ", "angular", "effect", "bowdler", "prob", "rat",
    "ceas", "control", "roll", "hop", "fall", "hiss", "fizz", "fail", "fil", "sing",
    "agre", "feed", "plaster", "bl", "motor", "conflat", "troubl", "siz", "happ", "sk",
    "cry", "tr", "genera", "oscill", "immun", "protein", "cell", "gene", "express",
    "regul", "metabol", "inflamm", "patient", "clinic", "therap", "surviv", "mutat",
    "boundar", "layer", "flow", "pressur", "wing", "aerodynam", "turbul", "vortic",
    "heat", "shock", "wave", "mach", "veloc", "stabil", "lamin", "compress",
]  # fmt: skip
SUFFIXES = [
    "", "s", "es", "ies", "sses", "ss", "ed", "ing", "eed", "y", "ly", "ness", "ational",
    "tional", "enci", "anci", "izer", "bli", "abli", "alli", "entli", "eli", "ousli",
    "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness", "aliti", "iviti",
    "biliti", "logi", "ology", "ological", "icate", "ative", "alize", "iciti", "ical",
    "ful", "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment",
    "ent", "sion", "tion", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e",
    "ll", "at", "bl", "iz", "ized", "izing", "ations", "ically", "ers", "ings",
]  # fmt: skip


def strings() -> list[str]:
    """Every input string of the fixture, in a fixed order."""
    rng = random.Random(20261204)
    out = list(CASES)
    for _ in range(2000):
        n = rng.randint(1, 6)
        parts = [rng.choice(PIECES)]
        for _ in range(n - 1):
            parts += [rng.choice(SEPARATORS), rng.choice(PIECES)]
        out.append("".join(parts))
    words = [stem + suffix for stem, suffix in itertools.product(STEMS, SUFFIXES)]
    out += [" ".join(words[i : i + 40]) for i in range(0, len(words), 40)]
    return out


def lucene(jar: Path, java: str, mode: str, arg) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        if mode == "tokens":
            src.write_text(json.dumps(arg, ensure_ascii=False), encoding="utf-8")
            args = [str(src), str(dst)]
        else:
            args = [str(arg), str(dst)]
        subprocess.run(
            [java, "-cp", str(jar), str(HERE / "LuceneAnalysis.java"), mode, *args], check=True
        )
        return json.loads(dst.read_text(encoding="utf-8"))


def check(folders: list[Path], jar: Path, java: str) -> None:
    """Compare lsr's terms with Lucene's over every document and query of BEIR folders."""
    from lsr.lucene_analyzer import analyze

    for folder in folders:
        texts = []
        for name in ("corpus.jsonl", "queries.jsonl"):
            with open(folder / name, encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    texts.append(f"{record.get('title', '')} {record['text']}".strip())
        expected = lucene(jar, java, "tokens", texts)
        differ = sum(analyze(t) != e for t, e in zip(texts, expected, strict=True))
        tokens = sum(map(len, expected))
        print(
            f"{folder.name}: {len(texts):,} texts, {tokens:,} Lucene terms, {differ} texts differ"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jar", required=True, type=Path, help="the Anserini fatjar")
    parser.add_argument("--java", default="java", help="a Java 21+ executable")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument(
        "--check",
        nargs="+",
        type=Path,
        default=None,
        metavar="BEIR_FOLDER",
        help="instead of writing the fixture, compare every document and query of these "
        "folders with Lucene",
    )
    args = parser.parse_args()
    if args.check:
        check(args.check, args.jar, args.java)
        return
    texts = strings()
    fixture = {
        "source": f"Anserini DefaultEnglishAnalyzer.newDefaultInstance() ({args.jar.name})",
        "strings": texts,
        "tokens": lucene(args.jar, args.java, "tokens", texts),
        "lengths": lucene(args.jar, args.java, "lengths", LENGTHS),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    n_tokens = sum(map(len, fixture["tokens"]))
    print(f"{len(texts)} strings, {n_tokens} tokens -> {args.out}")


if __name__ == "__main__":
    main()
