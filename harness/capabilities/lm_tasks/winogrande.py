"""WinoGrande's partial evaluation over the shared benchmark format (see lm-eval's winogrande task).

lm-eval's version reads `sentence`, `option1/2` and `answer` ("1"/"2"); the shared files hold the same
items as `centerpiece` (with one `_`), `options` and `correct_options_idx`.
"""


def doc_to_text(doc):
    """The index of the gold context: an int here tells lm-eval the choices are the inputs."""
    return int(doc["correct_options_idx"][0])


def doc_to_target(doc):
    """The continuation scored after every context: the sentence after the blank."""
    idx = doc["centerpiece"].index("_") + 1
    return doc["centerpiece"][idx:].strip()


def doc_to_choice(doc):
    """One context per option: the sentence up to the blank, with the option in it."""
    idx = doc["centerpiece"].index("_")
    return [doc["centerpiece"][:idx] + option for option in doc["options"]]
