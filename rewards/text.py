"""How a (prompt, response) pair becomes the text a reward model reads, and its token ids.
Training and scoring share these, so a checkpoint scores what it was trained on."""

from __future__ import annotations


def render_prompt(prompt: str | list[dict]) -> str:
    """A prompt as text: chat messages become "User: …" / "Assistant: …" turns.

    >>> render_prompt([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    'User: Hi\\n\\nAssistant: Hello'
    """
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def render_response(response: str | list[dict]) -> str:
    if isinstance(response, str):
        return response
    return "\n\n".join(m["content"] for m in response)


def reward_input(prompt: str | list[dict], response: str | list[dict]) -> str:
    """The text a reward model scores.

    >>> reward_input("Capital of France?", "Paris.")
    'Capital of France?\\n\\nAssistant: Paris.'
    """
    return f"{render_prompt(prompt)}\n\nAssistant: {render_response(response)}"


def encode(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids of `text`, cut from the left when too long: the response at the end is what is
    judged, so the oldest turns of the prompt go first. The tokenizer's special tokens stay."""
    return tokenizer(text, truncation=True, max_length=max_length)["input_ids"]


def prepare_tokenizer(tokenizer):
    """Cut long inputs from the left and make sure there is a padding token."""
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
