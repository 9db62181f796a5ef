import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blendin_local.errors import BlendinError
from blendin_local.eval import ifeval
from blendin_local.eval.ifeval import (
    INSTRUCTION_TYPES,
    IFEvalItem,
    aggregate,
    check_instruction,
    loose_variants,
    parse_item,
    score_response,
    split_sentences,
)

ROOT = Path(__file__).resolve().parents[2]
LANGUAGE_TYPES = {"language:response_language", "change_case:english_capital", "change_case:english_lowercase"}

ENGLISH = "The weather is lovely today and we are going for a long walk in the park"
HINDI = "मैं आज शाम को बाजार जा रहा हूँ और वहाँ से कुछ फल और सब्ज़ियाँ खरीदूँगा।"
JSON_TEXT = '{"name": "Ada", "skills": ["math", "poetry"]}'

# (instruction id, kwargs, response, expected strict verdict)
CASES = [
    ("keywords:existence", {"keywords": ["cat", "Dog"]}, "The dog chased a cat.", True),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "The cat slept.", False),
    ("keywords:existence", {"keywords": ["riddle", "Forest"]}, "Forests whisper riddles.", True),
    ("keywords:frequency", {"keyword": "brand", "frequency": 2, "relation": "at least"}, "Brand, brand.", True),
    ("keywords:frequency", {"keyword": "brand", "frequency": 2, "relation": "at least"}, "One brand only.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["bad", "run"]}, "A badge and a runner.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["bad", "run"]}, "That was BAD.", False),
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "at least"}, "A banana", True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 1, "let_relation": "less than"}, "# Title", False),
    ("language:response_language", {"language": "hi"}, HINDI, True),
    ("language:response_language", {"language": "hi"}, ENGLISH, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "Hi. Bye.", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "Hi. Bye.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\nSecond.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nOne.\n***\n", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\n***\nTwo.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n\n******\n\nTwo.", False),
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"}, "Stop right now.", True),
    ("length_constraints:number_words", {"num_words": 4, "relation": "at least"}, "Stop right now.", False),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "it"},
        'Intro.\n\n"It\'s" here.',
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "it"},
        "Intro.\n\nItems here.",
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "elm"},
        "Elm trees.\n\nMore.\n\nEven more.",
        False,
    ),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [ ].", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye.\n\np. s. call me", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye.\n\nP.P.S. call me", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Bye.\n\nP.P.S. call me", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "List:\n* one\n  - two\n***", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* one\n*two*\n- three\n-four", False),
    ("detectable_format:constrained_response", {}, "Hmm. My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "my answer is yes.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "* item *x\n2 * 3 * 4 ** **", False),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\na\nSECTION 2\nb",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nSection 2",
        False,
    ),
    ("detectable_format:json_format", {}, f"```json\n{JSON_TEXT}\n```", True),
    ("detectable_format:json_format", {}, f"Here you go: {JSON_TEXT}", False),
    ("detectable_format:title", {}, "<<My Poem>>\nRoses.", True),
    ("detectable_format:title", {}, "<< >>\n<My Poem>", False),
    ("combination:two_responses", {}, "Answer one.\n******\nAnswer two.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "A.\n******\n\n******\nB.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a POEM. Roses are red.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure! Write a poem.", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, 'Done. "Any other questions?"\n', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "I SAID no", True),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "NASA and U.S",
        False,
    ),
    ("change_case:english_capital", {}, ENGLISH.upper(), True),
    ("change_case:english_capital", {}, ENGLISH.upper() + " ok", False),
    ("change_case:english_capital", {}, HINDI + " OK", False),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), True),
    ("change_case:english_lowercase", {}, ENGLISH, False),
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("punctuation:no_comma", {}, "One，two", False),
    ("startend:quotation", {}, ' "Quoted answer." \n', True),
    ("startend:quotation", {}, '"Quoted" answer.', False),
]


def _needs_langdetect(instruction_id: str) -> None:
    if instruction_id in LANGUAGE_TYPES:
        pytest.importorskip("langdetect", reason="language checks need langdetect (the eval extra)")


def test_every_type_has_a_passing_and_a_failing_case():
    verdicts = {(case[0], case[3]) for case in CASES}
    assert len(INSTRUCTION_TYPES) == 25
    for instruction_id in INSTRUCTION_TYPES:
        assert (instruction_id, True) in verdicts and (instruction_id, False) in verdicts, instruction_id


@pytest.mark.parametrize("instruction_id, kwargs, response, expected", CASES)
def test_check_instruction(instruction_id, kwargs, response, expected):
    _needs_langdetect(instruction_id)
    assert check_instruction(instruction_id, kwargs, response, prompt="unused") is expected


@pytest.mark.parametrize("instruction_id, kwargs", [(case[0], case[1]) for case in CASES[::2]])
def test_a_blank_response_follows_no_instruction(instruction_id, kwargs):
    assert check_instruction(instruction_id, kwargs, " \n ", prompt="p") is False


# The rules below are Google's reference evaluator's (google-research/instruction_following_eval):
# each test shows responses judged as the reference judges them, where a plainer reading would not.


def test_keywords_are_counted_inside_longer_words_too():
    existence = {"keywords": ["riddle", "bad"]}
    assert check_instruction("keywords:existence", existence, "Riddles, badly told.", "p")
    war_twice = {"keyword": "war", "frequency": 2, "relation": "at least"}
    assert check_instruction("keywords:frequency", war_twice, "A warrior, not a war.", "p")
    # Relations count the same way: "brand" appears twice in "brand new branding".
    brand_under_twice = {"keyword": "brand", "frequency": 2, "relation": "less than"}
    assert not check_instruction("keywords:frequency", brand_under_twice, "A brand new branding.", "p")


def test_words_are_runs_of_letters_and_digits():
    # "Don't", "well-known" and "3.14" are two words each: 8 words in all.
    text = "Don't cite well-known 3.14 stuff."
    assert check_instruction("length_constraints:number_words", {"num_words": 8, "relation": "at least"}, text, "p")
    assert not check_instruction("length_constraints:number_words", {"num_words": 9, "relation": "at least"}, text, "p")


def test_three_asterisks_divide_paragraphs_wherever_they_stand():
    two = {"num_paragraphs": 2}
    assert check_instruction("length_constraints:number_paragraphs", two, "First part. ***\n\nSecond part.", "p")
    assert check_instruction("length_constraints:number_paragraphs", two, "One paragraph. *** Another one.", "p")
    # Bold italics divide too: "***Title***" makes "Title" a paragraph of its own.
    assert check_instruction("length_constraints:number_paragraphs", two, "***Title*** text.\n\nMore.", "p")


def test_the_first_word_ends_at_punctuation_only():
    def first_word_is(word: str, response: str) -> bool:
        kwargs = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": word}
        return check_instruction("length_constraints:nth_paragraph_first_word", kwargs, response, "p")

    assert first_word_is("summary", "Intro.\n\nSummary, in short.")
    assert first_word_is("it", "Intro.\n\n'It's' here.")
    # A colon or markdown stays part of the word.
    assert not first_word_is("summary", "Intro.\n\nSummary: in short.")
    assert not first_word_is("summary", "Intro.\n\n**Summary** in short.")
    # Only "\n\n" separates paragraphs, and a blank piece between two still takes a place in the numbering.
    assert not first_word_is("summary", "Intro.\n \nSummary, in short.")
    assert not first_word_is("summary", "Intro.\n\n\n\nSummary, in short.")


def test_language_is_detected_on_the_text_as_written():
    pytest.importorskip("langdetect", reason="language checks need langdetect (the eval extra)")
    # Detected on the capitals themselves: English here, though its lowercase reads as Catalan...
    assert check_instruction("change_case:english_capital", {}, "PIXEL PRODIGY\nCODE CONSTRUCT\nDIGITAL DYNAMICS", "p")
    # ...and German here, though its lowercase reads as English.
    assert not check_instruction("change_case:english_capital", {}, "BRIGHT IDEAS FOR SMALL GARDENS", "p")


def test_a_letter_that_is_not_a_letter_is_counted_as_written():
    # IFEval keys 1122 and 1129 ask for "#" and "!"; the reference counts them as given.
    hashes = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    assert check_instruction("keywords:letter_frequency", hashes, "# A\n## B\n# C", "p")
    assert not check_instruction("keywords:letter_frequency", hashes, "# A\n# B\n# C", "p")


def test_repeat_prompt_defaults_to_the_whole_prompt():
    assert check_instruction("combination:repeat_prompt", {"prompt_to_repeat": None}, "Say hi. Hi!", "Say hi.")


@pytest.mark.parametrize(
    "instruction_id, relation_name, bound_name, fixed, text_of",
    [
        ("length_constraints:number_words", "relation", "num_words", {}, lambda n: " ".join(["word"] * n)),
        ("length_constraints:number_sentences", "relation", "num_sentences", {}, lambda n: " ".join(["Go on."] * n)),
        ("keywords:frequency", "relation", "frequency", {"keyword": "cat"}, lambda n: "cat " * n + "dog"),
        ("keywords:letter_frequency", "let_relation", "let_frequency", {"letter": "q"}, lambda n: "Q" * n + " x"),
        (
            "change_case:capital_word_frequency",
            "capital_relation",
            "capital_frequency",
            {},
            lambda n: "OK " * n + "fine",
        ),
    ],
)
@pytest.mark.parametrize("count, less_than, at_least", [(2, True, False), (3, False, True), (4, False, True)])
def test_relations_at_the_boundary(
    instruction_id, relation_name, bound_name, fixed, text_of, count, less_than, at_least
):
    kwargs = {**fixed, bound_name: 3}
    response = text_of(count)
    assert check_instruction(instruction_id, {**kwargs, relation_name: "less than"}, response, "p") is less_than
    assert check_instruction(instruction_id, {**kwargs, relation_name: "at least"}, response, "p") is at_least


@pytest.mark.parametrize(
    "instruction_id, kwargs, text_of, passes",
    [
        ("detectable_format:number_bullet_lists", {"num_bullets": 3}, lambda n: "* x\n" * n, {3}),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, lambda n: "\n***\n".join(["p"] * n), {3}),
        ("detectable_format:number_highlighted_sections", {"num_highlights": 3}, lambda n: "*h* " * n, {3, 4}),
        ("detectable_content:number_placeholders", {"num_placeholders": 3}, lambda n: "[x] " * n, {3, 4}),
        (
            "detectable_format:multiple_sections",
            {"section_spliter": "Day", "num_sections": 3},
            lambda n: "".join(f"Day {i}\nrest\n" for i in range(n)),
            {3, 4},
        ),
    ],
)
def test_counts_exactly_or_at_least(instruction_id, kwargs, text_of, passes):
    for count in (2, 3, 4):
        assert check_instruction(instruction_id, kwargs, text_of(count), "p") is (count in passes), count


def test_loose_variants_are_the_eight_trims():
    assert loose_variants("*a*\nb\n*c*") == ("*a*\nb\n*c*", "b\n*c*", "*a*\nb", "b", "a\nb\nc", "b\nc", "a\nb")
    assert len(loose_variants("*a*\n*b*\nc\n*d*")) == 8


def test_loose_accepts_a_chatty_first_line_a_closing_remark_and_emphasis():
    item = IFEvalItem(
        key=1,
        prompt="p",
        instruction_ids=("detectable_format:json_format", "startend:end_checker", "startend:quotation"),
        kwargs=({}, {"end_phrase": "Bye."}, {}),
    )
    assert score_response(item, f"Sure, here it is:\n{JSON_TEXT}") == {
        "strict": [False, False, False],
        "loose": [True, False, False],
        "prompt_strict": False,
        "prompt_loose": False,
    }
    score = score_response(item, '*"Hello. Bye."*\nHope this helps!')
    assert score["strict"] == [False, False, False]
    assert score["loose"] == [True, True, True]  # a quoted string is JSON too
    assert score_response(item, "Bye.") == {
        "strict": [False, True, False],
        "loose": [False, True, False],
        "prompt_strict": False,
        "prompt_loose": False,
    }


def test_prompt_level_needs_every_instruction():
    item = IFEvalItem(1, "p", ("punctuation:no_comma", "detectable_format:title"), ({}, {}))
    assert score_response(item, "<<T>>\nNo commas.")["prompt_strict"] is True
    assert score_response(item, "<<T>>\nA, b.")["loose"] == [True, True]
    assert score_response(item, "<<T>> A, b.") == {
        "strict": [False, True],
        "loose": [False, True],
        "prompt_strict": False,
        "prompt_loose": False,
    }


@pytest.mark.parametrize(
    "text, sentences",
    [
        (
            "Mr. Smith met Dr. Jones at St. Paul's. They talked.",
            ["Mr. Smith met Dr. Jones at St. Paul's.", "They talked."],
        ),
        (
            "The U.S. economy grew, e.g. in tech, by 3.14 percent.",
            ["The U.S. economy grew, e.g. in tech, by 3.14 percent."],
        ),
        ("I moved to the U.S. It was 5 p.m. and dark.", ["I moved to the U.S.", "It was 5 p.m. and dark."]),
        ("Wait... what? Really?! Yes!!", ["Wait... what?", "Really?!", "Yes!!"]),
        ("It was late… The end.", ["It was late…", "The end."]),
        ('"Stop!" he shouted. She said "Go home." He did.', ['"Stop!" he shouted.', 'She said "Go home."', "He did."]),
        (
            "J. R. R. Tolkien wrote it (in 1937.) Fans, etc. love it. Smith et al. Agreed.",
            ["J. R. R. Tolkien wrote it (in 1937.)", "Fans, etc. love it.", "Smith et al.", "Agreed."],
        ),
        ("My answer is no. No. 5 wins.", ["My answer is no.", "No. 5 wins."]),
        (
            "# Tips\n\n1. Sleep well\n2. Eat fruit\n- Walk. Run\n\n***",
            ["Tips", "Sleep well", "Eat fruit", "Walk.", "Run"],
        ),
        ("*Intro.* Visit example.com today.", ["*Intro.*", "Visit example.com today."]),
        ("", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_aggregate_arithmetic():
    scores = [
        {"strict": [True, True], "loose": [True, True], "prompt_strict": True, "prompt_loose": True},
        {"strict": [True, False, False], "loose": [True, True, False], "prompt_strict": False, "prompt_loose": False},
        {"strict": [False], "loose": [True], "prompt_strict": False, "prompt_loose": True},
        {"strict": [False, True], "loose": [True, True], "prompt_strict": False, "prompt_loose": True},
    ]
    assert aggregate(scores) == {
        "prompt_strict": 1 / 4,
        "prompt_loose": 3 / 4,
        "instruction_strict": 4 / 8,
        "instruction_loose": 7 / 8,
        "n_prompts": 4,
        "n_instructions": 8,
    }
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])


def _data_dir() -> Path:
    return Path(os.environ.get("BLENDIN_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


def test_parse_item_reads_every_line_of_the_real_data():
    path = _data_dir() / "ifeval" / "input_data.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    items = [parse_item(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(items) == 541
    assert {i for item in items for i in item.instruction_ids} == set(INSTRUCTION_TYPES)
    assert all(len(item.kwargs) == len(item.instruction_ids) for item in items)
    assert all(value is not None for item in items for kwargs in item.kwargs for value in kwargs.values())


REFERENCE_DATA = Path(__file__).parent / "data"


def test_agrees_with_the_reference_on_its_gpt4_responses(monkeypatch):
    """The GPT-4 responses google-research/instruction_following_eval ships, judged by its evaluator
    (tests/eval/data/README.md); only one sentence count still differs (Punkt's sentence model)."""
    input_data = _data_dir() / "ifeval" / "input_data.jsonl"
    files = [
        REFERENCE_DATA / f"ifeval_gpt4_{name}.jsonl.xz" for name in ("responses", "reference_strict", "reference_loose")
    ]
    if not all(path.exists() for path in (input_data, *files)):
        pytest.skip("the IFEval data or the reference's GPT-4 results are absent")
    pytest.importorskip("langdetect", reason="language checks need langdetect (the eval extra)")
    spec = importlib.util.spec_from_file_location("ifeval_agreement", ROOT / "scripts" / "ifeval_agreement.py")
    assert spec and spec.loader
    agreement = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, agreement)  # its dataclasses look their module up there
    spec.loader.exec_module(agreement)

    items = [parse_item(record) for record in agreement.read_jsonl(input_data)]
    responses = {r["prompt"]: r["response"] for r in agreement.read_jsonl(files[0])}
    reference = {
        mode: {r["prompt"]: r for r in agreement.read_jsonl(path)}
        for mode, path in zip(agreement.MODES, files[1:], strict=True)
    }
    modes = agreement.compare(items, responses, reference)
    assert (modes["strict"].agreed, modes["strict"].judged) == (833, 834)
    assert (modes["loose"].agreed, modes["loose"].judged) == (832, 834)
    assert set(modes["strict"].disagreements) | set(modes["loose"].disagreements) == {
        "length_constraints:number_sentences"
    }


GOOD_RECORD = {
    "key": 7,
    "prompt": "Write a title.",
    "instruction_id_list": ["detectable_format:title", "length_constraints:number_words"],
    "kwargs": [{"num_words": None}, {"relation": "at least", "num_words": 5, "keyword": None}],
}


def test_parse_item_drops_null_kwargs():
    item = parse_item(GOOD_RECORD)
    assert item == IFEvalItem(
        7,
        "Write a title.",
        ("detectable_format:title", "length_constraints:number_words"),
        ({}, {"relation": "at least", "num_words": 5}),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kwargs": None}, r"IFEval record 7: 'kwargs' must be a list of objects"),
        ({"instruction_id_list": []}, r"'instruction_id_list' must be a non-empty list"),
        ({"key": "7"}, r"'key' must be an integer"),
        ({"kwargs": [{}]}, r"2 instruction\(s\) but 1 kwargs object\(s\)"),
        (
            {"instruction_id_list": ["detectable_format:titel", "punctuation:no_comma"]},
            r"unknown IFEval instruction 'detectable_format:titel'",
        ),
        (
            {"kwargs": [{}, {"relation": "at most", "num_words": 5}]},
            r"'relation' must be one of 'less than' or 'at least', got 'at most'",
        ),
        ({"kwargs": [{}, {"relation": "at least"}]}, r"number_words: missing kwarg\(s\) num_words"),
        (
            {"kwargs": [{"num_words": 3}, {"relation": "at least", "num_words": 5}]},
            r"title: unexpected kwarg\(s\) num_words",
        ),
        ({"kwargs": [{}, {"relation": "at least", "num_words": "5"}]}, r"'num_words' must be a non-negative integer"),
    ],
)
def test_parse_item_rejects_a_malformed_record(change, message):
    with pytest.raises(ValueError, match=message):
        parse_item({**GOOD_RECORD, **change})


def test_parse_item_names_missing_fields():
    with pytest.raises(ValueError, match=r"IFEval record 7: missing field\(s\) prompt, kwargs"):
        parse_item({"key": 7, "instruction_id_list": []})
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_item(["not", "a", "record"])


def test_importing_the_scorer_does_not_import_langdetect():
    code = "import sys, blendin_local.eval.ifeval; print('langdetect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_language_check_without_langdetect_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "langdetect", None)
    ifeval._language_detector.cache_clear()
    try:
        with pytest.raises(BlendinError, match=r"need the 'langdetect' package"):
            check_instruction("language:response_language", {"language": "de"}, "Guten Tag", "p")
        assert check_instruction("punctuation:no_comma", {}, "Fine", "p")
    finally:
        ifeval._language_detector.cache_clear()
