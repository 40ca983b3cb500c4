"""Persona templates: the workspace ``SOUL.md`` an instance starts with (spec "Persona Templates").

OpenClaw injects ``SOUL.md`` into every prompt and truncates a bootstrap file past 20,000
characters, counted as JavaScript string length (UTF-16 code units). A custom text over the limit
is refused rather than silently truncated on the instance.
"""

from __future__ import annotations

PERSONA_FIELD = "persona_template"
SOUL_FIELD = "soul_md"
SOUL_MAX_CHARS = 20_000
CUSTOM = "custom"

PERSONAS: dict[str, str] = {
    "assistant": """# SOUL.md

You are a personal assistant. Helpful, proactive, concise.

You help with:
- Daily planning and reminders
- Quick research and answers
- Writing and editing
- General productivity

Be warm but efficient. Respect the user's time.
""",
    "dev": """# SOUL.md

You are a technical assistant for developers.

You help with:
- Code review and suggestions
- Debugging and problem-solving
- Documentation
- Git workflows

Be precise and technical. Show code examples when relevant.
""",
    "creative": """# SOUL.md

You are a creative collaborator.

You help with:
- Brainstorming and ideation
- Writing and storytelling
- Content planning
- Feedback and editing

Be imaginative but grounded. Push ideas forward.
""",
}

# Every accepted value of persona_template: the templates plus "custom" (the user's own text).
PERSONA_NAMES: tuple[str, ...] = (*PERSONAS, CUSTOM)

# One line per persona, for where a channel shows what the assistant is (a bot's profile).
ABOUT: dict[str, str] = {
    "assistant": "Your personal assistant: planning, reminders, quick answers and writing help.",
    "dev": "Your technical assistant: code review, debugging, documentation and Git.",
    "creative": "Your creative partner: brainstorming, writing and ideas that go further.",
    CUSTOM: "Your personal AI assistant.",
}


def about(persona: str | None) -> str:
    return ABOUT.get(persona or CUSTOM, ABOUT[CUSTOM])


def soul_chars(text: str) -> int:
    """Length as OpenClaw measures it: UTF-16 code units (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def soul_md(persona: str, custom: str | None) -> str:
    """The SOUL.md text for ``persona``; ``custom`` is the user's text.

    For "custom" it is the whole file (required); for a template it is appended to it.
    Raises ValueError whose message starts with the offending field's name.
    """
    if persona != CUSTOM and persona not in PERSONAS:
        raise ValueError(
            f"{PERSONA_FIELD}: unknown persona {persona!r}; one of {', '.join(PERSONA_NAMES)}"
        )
    if custom is not None and not isinstance(custom, str):
        raise ValueError(f"{SOUL_FIELD}: must be a string")
    if custom is not None and "\x00" in custom:
        raise ValueError(f"{SOUL_FIELD}: must not contain NUL characters")
    if persona == CUSTOM:
        if custom is None or not custom.strip():
            raise ValueError(f"{SOUL_FIELD}: required for the custom persona")
        text = custom
    elif custom and custom.strip():
        text = PERSONAS[persona] + "\n" + custom
    else:
        text = PERSONAS[persona]
    size = soul_chars(text)
    if size > SOUL_MAX_CHARS:
        raise ValueError(
            f"{SOUL_FIELD}: {size} characters; OpenClaw's limit is {SOUL_MAX_CHARS} per file"
        )
    return text
