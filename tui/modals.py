"""Questions the console asks before it changes anything: yes or no, or a small form whose
answers are checked here first (the daemon checks them again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class Confirm(ModalScreen[bool]):
    """Yes or no, before an action that changes a user's assistant or money."""

    BINDINGS = [("y", "answer(True)", "Yes"), ("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm", classes="dialog"):
            yield Label(self.question)
            yield Label("y: yes · n: no", classes="muted")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


@dataclass(frozen=True)
class Field:
    """One answer of a form; `parse` turns the text into the value sent, or raises ValueError
    with the reason shown under the form."""

    name: str
    label: str
    placeholder: str = ""
    parse: Callable[[str], Any] = str
    value: str = ""


class Form(ModalScreen[dict[str, Any] | None]):
    """A few labelled answers; Enter moves on and submits from the last one, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[Field]) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical(id="form", classes="dialog"):
            yield Label(self.title_text, classes="title")
            for f in self.fields:
                yield Label(f.label)
                yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{f.name}")
            yield Label("", id="form-error")
            yield Label("Enter: next / submit · Escape: cancel", classes="muted")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        message.stop()
        inputs = list(self.query(Input))
        position = inputs.index(message.input)
        if position + 1 < len(inputs):
            inputs[position + 1].focus()
            return
        answers: dict[str, Any] = {}
        for f, box in zip(self.fields, inputs, strict=True):
            try:
                answers[f.name] = f.parse(box.value)
            except ValueError as exc:
                self.query_one("#form-error", Label).update(f"{f.label}: {exc}")
                box.focus()
                return
        self.dismiss(answers)

    def action_cancel(self) -> None:
        self.dismiss(None)


def required_text(text: str) -> str:
    if not text.strip():
        raise ValueError("needed")
    return text.strip()


def whole_number(low: int, high: int, *, blank: Any = ...) -> Callable[[str], Any]:
    """A whole number in [low, high]; blank gives `blank` when it is allowed."""

    def parse(text: str) -> Any:
        text = text.strip().replace(",", "").replace("_", "")
        if not text and blank is not ...:
            return blank
        if not text.lstrip("-").isdigit():
            raise ValueError(f"a whole number from {low} to {high}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"from {low} to {high}")
        return value

    return parse


def typed_word(word: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip().lower() != word:
            raise ValueError(f"type {word} to go on")
        return word

    return parse
