"""Masking secret values in what leaves a kernel, and in notebooks saved to disk.

A ``Masker`` holds the values handed to one kernel (and password replies
typed into it) in every form we look for: plain, base64 (standard and URL
alphabets, at each of the three byte alignments inside a longer base64
text), hex, URL-encoded and HTML-escaped. The forms go into one
Aho–Corasick automaton (pyahocorasick, in C): one pass over a text finds
every form of every value, so 1,000 secrets cost about what one does, where
a loop of ``str.replace`` (or Python's backtracking ``re`` over a large
alternation) costs one scan per pattern. A second automaton holds each
form's bytes as they appear in a message's raw JSON and in binary buffers:
most messages are scanned once, undecoded, and pass untouched.
``StreamMasker`` holds back the end of a stream message that could be the
start of a value, so a value printed across two messages is still caught.
Masking is defence in depth, not a boundary: code that was handed a value
can always print it transformed.
"""

from __future__ import annotations

import base64
import html
import json
import threading
from urllib.parse import quote, quote_plus

import ahocorasick
from jupyter_client.session import DELIM, json_unpacker, orjson_unpacker

MASK = "[secret]"
# Shorter values would mask ordinary text; they are handed out, never masked.
MIN_VALUE_LENGTH = 4
# A value's derived forms that are shorter than this are not looked for alone.
MIN_FORM_LENGTH = 6
# Message types whose content is masked: every one a kernel sends, but status.
UNMASKED_TYPES = frozenset({"status"})
# In raw JSON from jupyter_client's packers every character of a string has one
# spelling, except these escapes, which a packer never writes but a parser reads:
# a message holding one is decoded before it is judged.
_OTHER_SPELLINGS = (b"\\u", b"\\/")
# What a binary buffer that held a value is replaced with (its place is kept,
# so ``buffer_paths`` in the message still point at the right buffers).
REMOVED_BUFFER = b""


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


def _byte_spellings(form: str) -> set[str]:
    """``form``'s bytes, as a text of one character per byte (latin-1): as UTF-8 alone (in a
    binary buffer), and escaped as in a JSON string (in a message's raw content)."""
    plain = form.encode("utf-8", "surrogatepass")
    escaped = json.dumps(form, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
    return {plain.decode("latin-1"), escaped.decode("latin-1")}


_LONG_BYTES = 4096


def _found(automaton, data: bytes) -> bool:
    for _ in automaton.iter(data.decode("latin-1")):
        return True
    return False


class _Automata:
    """What one set of forms compiles to; replaced whole when a value is added."""

    __slots__ = ("text", "raw", "longest", "prefix_ends", "starts", "chars", "byte_marks", "run")

    def __init__(self, forms: set[str]):
        self.text = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
        self.raw = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
        raw_spellings = set()
        for form in forms:
            self.text.add_word(form)
            raw_spellings |= _byte_spellings(form)
        for spelling in raw_spellings:
            self.raw.add_word(spelling)
        # For long binary: 1 for each byte value some spelling holds, else 0. A spelling
        # lies in a run of marked bytes at least as long as the shortest spelling.
        in_spellings = {ord(c) for spelling in raw_spellings for c in spelling}
        self.byte_marks = bytes(1 if b in in_spellings else 0 for b in range(256))
        self.run = b"\x01" * min((len(sp) for sp in raw_spellings), default=1)
        for automaton in (self.text, self.raw):
            if len(automaton):
                automaton.make_automaton()
        self.longest = max((len(f) for f in forms), default=0)
        # The characters that can end a form's proper prefix: a text ending in any
        # other character can't be holding the start of a value.
        self.prefix_ends = frozenset(c for f in forms for c in f[:-1])
        self.starts = frozenset(f[0] for f in forms if f)  # where a held-back start can begin
        self.chars = frozenset(c for f in forms for c in f)  # what a held-back start is made of


class Masker:
    """The values of one kernel (or of the whole server, for saves), and their automata."""

    def __init__(self):
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._automata: _Automata | None = None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._forms)

    @property
    def longest(self) -> int:
        return self._built().longest

    @classmethod
    def union(cls, maskers) -> Masker:
        """One masker for the values of several."""
        joined = cls()
        for masker in maskers:
            for value in list(masker._values):
                joined.add(value)
        return joined

    def add(self, value: str) -> None:
        if not isinstance(value, str) or value in self._values:
            return
        forms = value_forms(value)
        with self._lock:
            self._values.add(value)
            if forms - self._forms:
                self._forms |= forms
                self._automata = None

    def _built(self) -> _Automata:
        automata = self._automata
        if automata is None:
            with self._lock:
                automata = self._automata = _Automata(set(self._forms))
        return automata

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Merged [start, end) spans of every form found in ``text``."""
        if not self._forms or not text:
            return []
        found = sorted((end - length + 1, end + 1) for end, length in self._built().text.iter(text))
        merged: list[list[int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(s, e) for s, e in merged]

    def mask(self, text: str, spans: list[tuple[int, int]] | None = None) -> str:
        spans = self.spans(text) if spans is None else spans
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            out += [text[at:start], MASK]
            at = end
        out.append(text[at:])
        return "".join(out)

    def held_back(self, text: str, spans: list[tuple[int, int]] | None = None) -> int:
        """How many characters at the end of ``text`` could begin a value (past every match)."""
        if not self._forms or not text:
            return 0
        automata = self._built()
        if text[-1] not in automata.prefix_ends:
            return 0
        spans = self.spans(text) if spans is None else spans
        after = spans[-1][1] if spans else 0
        # Only the tail made of characters that occur in forms can start one
        # (ordinary text: the last word at most).
        first, at, chars = max(after, len(text) - automata.longest + 1), len(text), automata.chars
        while at > first and text[at - 1] in chars:
            at -= 1
        starts = automata.starts
        for at in range(at, len(text)):  # the longest held-back start first
            if text[at] in starts and automata.text.match(text[at:]):
                return len(text) - at
        return 0

    def in_bytes(self, data: bytes) -> bool:
        """Whether ``data`` holds a form's bytes: as UTF-8, or escaped as in a JSON string."""
        if not self._forms or not data:
            return False
        automata = self._built()
        if len(data) < _LONG_BYTES:
            return _found(automata.raw, data)
        # Long data (a buffer): only runs of bytes that spellings are made of are
        # scanned; binary has few and short ones (bytes.translate and find run in C).
        marks = data.translate(automata.byte_marks)
        at = marks.find(automata.run)
        while at != -1:
            end = marks.find(b"\x00", at)
            end = len(data) if end == -1 else end
            if _found(automata.raw, data[at:end]):
                return True
            at = marks.find(automata.run, end)
        return False

    def mask_json(self, value):
        """``value`` (decoded JSON) with every string masked, keys too; the same object if nothing changed."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            changed = {self.mask(k) if isinstance(k, str) else k: self.mask_json(v) for k, v in value.items()}
            if len(changed) == len(value) and all(k in value and changed[k] is value[k] for k in changed):
                return value
            return changed
        if isinstance(value, list):
            changed = [self.mask_json(v) for v in value]
            return value if all(a is b for a, b in zip(changed, value)) else changed
        return value

    def mask_buffer(self, data) -> tuple[bytes | None, bool]:
        """(the buffer to send instead, or None to send it as it is; whether it was removed).

        A buffer that decodes as UTF-8 is masked as text; binary that holds a
        value's bytes can't be masked in place, and is replaced whole.
        """
        data = bytes(data)
        if not self.in_bytes(data):
            return None, False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return REMOVED_BUFFER, True
        masked = self.mask(text)
        if masked == text:  # only a JSON-escaped spelling matched, not the text itself
            return None, False
        return masked.encode("utf-8", "surrogatepass"), False


class StreamMasker:
    """Per websocket connection: stream text held back between messages, by stream name."""

    def __init__(self, masker: Masker):
        self.masker = masker
        self.pending: dict[str, tuple[dict, str]] = {}  # name -> (parent header, held text)

    def stream(self, parent: dict, content: dict) -> dict:
        """The content to send for a stream message: the held text joined in front, the end held back.

        ``content`` itself when nothing was held, held back or masked."""
        name, text = content.get("name"), content.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            return self.masker.mask_json(content)
        held = self.pending.pop(name, None)
        joined = held is not None and held[0].get("msg_id") == parent.get("msg_id")
        if joined:
            text = held[1] + text
        spans = self.masker.spans(text)
        keep = self.masker.held_back(text, spans)
        if keep:
            self.pending[name] = (parent, text[-keep:])
            text = text[:-keep]
            spans = [(s, min(e, len(text))) for s, e in spans if s < len(text)]
        if not (joined or keep or spans):
            return content
        return {**content, "text": self.masker.mask(text, spans)}

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

    def __init__(self, channels, kernel_id: str, subject: str | None = None):
        # subject: the connection's user (who types at a password prompt)
        self.channels, self.kernel_id, self.subject = channels, kernel_id, subject
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
                self.channels.remember(self.kernel_id, content["value"], subject=self.subject)

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

    def _needs_decoding(self, session, channel: str, message, masker: Masker) -> bool:
        """Whether the content must be decoded and masked: False only when it surely holds no value.

        One pass of the bytes automaton over the raw content decides for most
        messages; a stream's text is decoded (not its header) to see whether
        its end could start a value.
        """
        raw = message.parts[3]
        if not isinstance(raw, bytes) or session.unpack not in (json_unpacker, orjson_unpacker):
            return True
        if channel == "iopub" and self.streams.pending:
            return True  # held text goes out first, or joins this message
        if masker.in_bytes(raw) or any(spelling in raw for spelling in _OTHER_SPELLINGS):
            return True
        if channel == "iopub" and b'"text"' in raw:
            content = message.content
            text = content.get("text") if isinstance(content, dict) else None
            return isinstance(text, str) and masker.held_back(text) > 0
        return False

    def zmq(self, connection, channel, outgoing_msg, idents, message):
        """A ZMQ message list, masked (signed again if its content changed); None to drop it.

        ``message`` is the guard's ``OutgoingMessage`` for it: its parts (header,
        parent header, metadata, content, buffers), each decoded on demand and once.
        """
        if channel not in ("iopub", "shell", "stdin") or self.channels is None or message.parts is None:
            return outgoing_msg
        masker = self._masker()
        session = connection.session
        if channel == "stdin":
            header = message.header
            if isinstance(header, dict) and header.get("msg_type") == "input_request":
                self._note_prompt(header, message.content)
        if masker is None:
            return outgoing_msg
        parts = message.parts
        new_content = None
        if self._needs_decoding(session, channel, message, masker):
            header, parent, content = message.header, message.parent, message.content
            if not isinstance(header, dict) or not isinstance(content, dict):
                return None  # undecodable, and so unmaskable: not sent

            def send_stream(held_parent, held):
                connection._to_client("iopub", session.msg("stream", held, parent=held_parent))

            masked = self._content(channel, header.get("msg_type"), parent if isinstance(parent, dict) else {},
                                   content, send_stream)
            if masked is None:
                return None
            if masked is not content:
                new_content = masked
        buffers = parts[4:]
        new_buffers = self._buffers(connection, message, masker, buffers) if buffers else None
        if new_content is None and new_buffers is None:
            return outgoing_msg
        head = [*parts[:3], session.pack(new_content) if new_content is not None else parts[3]]
        # Buffers are not signed: only a changed content needs a new signature.
        signature = session.sign(head) if new_content is not None else outgoing_msg[len(idents) + 1]
        return [*idents, DELIM, signature, *head, *(new_buffers if new_buffers is not None else buffers)]

    def _buffers(self, connection, message, masker: Masker, buffers: list) -> list | None:
        """The buffers to send, masked; None if none changed. A binary buffer that held a
        value is replaced by an empty one, audited, and its user told."""
        out, changed, removed = [], False, []
        for index, buffer in enumerate(buffers):
            replacement, was_removed = masker.mask_buffer(buffer)
            if replacement is None:
                out.append(buffer)
                continue
            changed = True
            out.append(replacement)
            if was_removed:
                removed.append((index, len(buffer)))
        if removed:
            header = message.header if isinstance(message.header, dict) else {}
            msg_type = header.get("msg_type")
            connection._audit("secret.buffer_removed", "deny", rate_limited=True,
                              reason="a binary buffer held a value handed to this kernel",
                              details={"msg_type": msg_type, "buffers": [i for i, _ in removed],
                                       "bytes": [n for _, n in removed]})
            connection._notice(f"[jupyter-warden] {len(removed)} binary buffer(s) of a {msg_type} message held "
                               "a secret value handed to this kernel and were not sent (see docs/secrets.md).",
                               message.parent)
        return out if changed else None

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
