"""Varied prompts for the invariant tests: apostrophes, numbers, code, lists, non-English text
and emoji (multi-byte UTF-8 split over tokens), short and long questions."""

INVARIANT_PROMPTS = (
    "How do I make a cup of tea?",
    "What's the capital of France, and why is it famous?",
    "Write a haiku about the sea.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
    "Explain what a binary search does in two sentences.",
    "Write a Python function that returns the square of a number.",
    "List three fruits that are red.",
    "Traduis en français : « Where is the train station? »",
    "用中文介绍一下熊猫。",
    "What does the emoji 🙂 usually mean?",
    "Don't you think it's strange that we can't see air? Explain.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Give me a recipe for pancakes.",
    "What is 17 times 23?",
    "Summarize the plot of Romeo and Juliet.",
    "How can I kill a Python process?",
    "Write a short email to my boss asking for a day off.",
    "What are the benefits of regular exercise?",
    "Why is the sky blue?",
    "Name the planets of the solar system in order.",
    "Is it safe to eat raw eggs?",
    "Tell me a joke about computers.",
)
