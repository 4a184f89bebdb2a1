"""Masking secret values in what leaves a kernel, and in notebooks saved to disk.

A ``Masker`` holds the values handed to one kernel (and password replies
typed into it) in every form we look for: plain, base64 (standard and URL
alphabets, at each of the three byte alignments inside a longer base64
text), hex, URL-encoded and HTML-escaped. The forms go into one
Aho–Corasick automaton (pyahocorasick, in C): one pass over a text finds
every form of every value, so 1,000 secrets cost about what one does, where
a loop of ``str.replace`` (or Python's backtracking ``re`` over a large
alternation) costs one scan per pattern. ``StreamMasker`` holds back the end
of a stream message that could be the start of a value, so a value printed
across two messages is still caught. Masking is defence in depth, not a
boundary: code that was handed a value can always print it transformed.
"""

from __future__ import annotations

import base64
import html
import threading
from urllib.parse import quote, quote_plus

import ahocorasick
from jupyter_client.session import DELIM

MASK = "[secret]"
# Shorter values would mask ordinary text; they are handed out, never masked.
MIN_VALUE_LENGTH = 4
# A value's derived forms that are shorter than this are not looked for alone.
MIN_FORM_LENGTH = 6
# Message types whose content is masked: every one a kernel sends, but status.
UNMASKED_TYPES = frozenset({"status"})


def value_forms(value: str) -> set[str]:
    """Every spelling of ``value`` that masking looks for."""
    if len(value) < MIN_VALUE_LENGTH:
        return set()
    data = value.encode("utf-8", "surrogatepass")
    forms = {value, data.hex(), data.hex().upper(), quote(value, safe=""), quote(value), quote_plus(value),
             html.escape(value), html.escape(value, quote=False)}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        if offset == 0:
            forms.add(encoded)  # the value encoded alone, with its padding
        # Inside a longer base64 text, only the characters made of the value's
        # bits alone are fixed: drop those mixed with what comes before or after.
        start = -(-8 * offset // 6)
        end = 8 * (offset + len(data)) // 6
        forms.add(encoded[start:end])
    for form in list(forms):
        if "+" in form or "/" in form:
            forms.add(form.replace("+", "-").replace("/", "_"))
    return {f for f in forms if f == value or len(f) >= MIN_FORM_LENGTH}


class Masker:
    """The values of one kernel (or of the whole server, for saves), and their automaton."""

    def __init__(self):
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._automaton = None
        self._longest = 0
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._forms)

    @property
    def longest(self) -> int:
        return self._longest

    def add(self, value: str) -> None:
        if not isinstance(value, str) or value in self._values:
            return
        forms = value_forms(value)
        with self._lock:
            self._values.add(value)
            if forms - self._forms:
                self._forms |= forms
                self._automaton = None

    def _built(self):
        automaton = self._automaton
        if automaton is None:
            with self._lock:
                automaton = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
                for form in self._forms:
                    automaton.add_word(form)
                automaton.make_automaton()
                self._longest = max((len(f) for f in self._forms), default=0)
                self._automaton = automaton
        return automaton

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Merged [start, end) spans of every form found in ``text``."""
        if not self._forms or not text:
            return []
        found = sorted((end - length + 1, end + 1) for end, length in self._built().iter(text))
        merged: list[list[int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(s, e) for s, e in merged]

    def mask(self, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            out += [text[at:start], MASK]
            at = end
        out.append(text[at:])
        return "".join(out)

    def held_back(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a value (past every match)."""
        if not self._forms or not text:
            return 0
        automaton = self._built()
        spans = self.spans(text)
        after = spans[-1][1] if spans else 0
        for k in range(min(self._longest - 1, len(text) - after), 0, -1):
            if automaton.match(text[-k:]):
                return k
        return 0

    def mask_json(self, value):
        """``value`` (decoded JSON) with every string masked; the same object if nothing changed."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            changed = {k: self.mask_json(v) for k, v in value.items()}
            return value if all(changed[k] is value[k] for k in value) else changed
        if isinstance(value, list):
            changed = [self.mask_json(v) for v in value]
            return value if all(a is b for a, b in zip(changed, value)) else changed
        return value


class StreamMasker:
    """Per websocket connection: stream text held back between messages, by stream name."""

    def __init__(self, masker: Masker):
        self.masker = masker
        self.pending: dict[str, tuple[dict, str]] = {}  # name -> (parent header, held text)

    def stream(self, parent: dict, content: dict) -> dict:
        """The content to send for a stream message: the held text joined in front, the end held back."""
        name, text = content.get("name"), content.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            return self.masker.mask_json(content)
        held = self.pending.pop(name, None)
        if held is not None and held[0].get("msg_id") == parent.get("msg_id"):
            text = held[1] + text
        keep = self.masker.held_back(text)
        if keep:
            self.pending[name] = (parent, text[-keep:])
            text = text[:-keep]
        return {**content, "text": self.masker.mask(text)}

    def flush(self, except_name: str | None = None, parent_id: str | None = None) -> list[tuple[dict, dict]]:
        """(parent, content) of held text to send now, before a message that ends the run of streams."""
        out = []
        for name in list(self.pending):
            parent, text = self.pending[name]
            if name == except_name and parent.get("msg_id") == parent_id:
                continue
            del self.pending[name]
            out.append((parent, {"name": name, "text": self.masker.mask(text)}))
        return out


def mask_notebook(model_content, masker: Masker):
    """A notebook's JSON (as a contents model holds it) with its outputs masked."""
    if not masker or not isinstance(model_content, dict):
        return model_content
    cells = model_content.get("cells")
    if not isinstance(cells, list):
        return model_content
    for cell in cells:
        if isinstance(cell, dict) and isinstance(cell.get("outputs"), list):
            cell["outputs"] = masker.mask_json(cell["outputs"])
    return model_content


class OutputMasking:
    """One kernel websocket connection's masking: its kernel's values, held stream text, password prompts.

    The kernel channel guard calls ``zmq``/``json`` on every message to the
    client and ``input_reply`` on every stdin reply from it.
    """

    _PROMPTS_KEPT = 64

    def __init__(self, channels, kernel_id: str):
        self.channels, self.kernel_id = channels, kernel_id
        self.streams: StreamMasker | None = None
        self.password_prompts: dict[str, None] = {}  # msg_ids of input_requests with password: true

    def _masker(self) -> Masker | None:
        masker = self.channels.masker_for(self.kernel_id) if self.channels is not None else None
        if masker is not None and (self.streams is None or self.streams.masker is not masker):
            self.streams = StreamMasker(masker)
        return masker

    def _note_prompt(self, header: dict, content) -> None:
        if isinstance(content, dict) and content.get("password") is True and isinstance(header.get("msg_id"), str):
            self.password_prompts[header["msg_id"]] = None
            while len(self.password_prompts) > self._PROMPTS_KEPT:
                self.password_prompts.pop(next(iter(self.password_prompts)))

    def input_reply(self, parent_id, content) -> None:
        """A reply typed at a password prompt is masked in this kernel's outputs from now on."""
        if parent_id in self.password_prompts and isinstance(content, dict):
            self.password_prompts.pop(parent_id, None)
            if isinstance(content.get("value"), str) and self.channels is not None:
                self.channels.remember(self.kernel_id, content["value"])

    def _content(self, channel, msg_type, parent, content, send_stream):
        """The masked content; ``content`` itself if unchanged; None to drop the message."""
        masker = self._masker()
        if masker is None:
            return content
        if channel == "iopub":
            is_stream = msg_type == "stream" and isinstance(content, dict)
            for held_parent, held in self.streams.flush(
                content.get("name") if is_stream else None, parent.get("msg_id")
            ):
                send_stream(held_parent, held)
            if is_stream:
                masked = self.streams.stream(parent, content)
                return None if masked.get("text") == "" else masked
        if msg_type in UNMASKED_TYPES:
            return content
        return masker.mask_json(content)

    def zmq(self, connection, channel, outgoing_msg, decoded=None):
        """A ZMQ message list, masked and signed again; None to drop it.

        ``decoded``: (header, parent header) if the caller has decoded them already.
        """
        if channel not in ("iopub", "shell", "stdin") or self.channels is None:
            return outgoing_msg
        if channel != "stdin" and self._masker() is None:
            return outgoing_msg
        session = connection.session
        idents, fed = session.feed_identities(outgoing_msg)
        if len(fed) < 5:
            return outgoing_msg
        try:
            header, parent = decoded or (session.unpack(fed[1]), session.unpack(fed[2]))
            content = session.unpack(fed[4])
        except ValueError:
            return outgoing_msg
        msg_type = header.get("msg_type")
        if channel == "stdin" and msg_type == "input_request":
            self._note_prompt(header, content)

        def send_stream(held_parent, held):
            connection._to_client("iopub", session.msg("stream", held, parent=held_parent))

        masked = self._content(channel, msg_type, parent, content, send_stream)
        if masked is None:
            return None
        if masked is content:
            return outgoing_msg
        parts = [fed[1], fed[2], fed[3], session.pack(masked)]
        return [*idents, DELIM, session.sign(parts), *parts, *fed[5:]]

    def json(self, connection, msg: dict):
        """A JSON-protocol message dict (a gateway's), masked; None to drop it."""
        channel, header = msg.get("channel"), msg.get("header") or {}
        if channel == "stdin" and header.get("msg_type") == "input_request":
            self._note_prompt(header, msg.get("content"))

        def send_stream(held_parent, held):
            connection._to_client("iopub", connection.session.msg("stream", held, parent=held_parent))

        masked = self._content(channel, header.get("msg_type"), msg.get("parent_header") or {},
                               msg.get("content"), send_stream)
        if masked is None:
            return None
        return msg if masked is msg.get("content") else {**msg, "content": masked}
