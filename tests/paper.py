"""The paper's BlendIn, by name: neither of issue 14's triggers. The tests of the paper's method
and of its invariants (alpha 0 is the base, alpha 1 at every token is the guide, a model blended
with itself is itself) ask for it, so that they test that method whatever the defaults become
(docs/results.md chooses them from the ablation): the ending trigger ends an answer where the
guide finds it finished, which neither model alone does."""

PAPERS_BLENDIN = {"loop_trigger": False, "end_trigger": False}
