"""S3's XML: answers built with ElementTree, request bodies parsed with ``defusedxml`` (no
entity expansion, no external entities: a request body is hostile input)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml

from keelfs.gateways.s3.errors import S3Error

__all__ = ["NS", "child_text", "document", "iso_time", "parse", "sub", "tag"]

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BYTES = 2 * 1024 * 1024
"""The largest request body parsed as XML (S3's DeleteObjects takes 1000 keys)."""


def document(root: str) -> Element:
    return Element(root, xmlns=NS)


def sub(parent: Element, name: str, text: Any = None) -> Element:
    element = SubElement(parent, name)
    if text is not None:
        element.text = str(text)
    return element


def render(root: Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root)


def iso_time(ms: int) -> str:
    """S3's timestamp (``2006-02-03T16:45:09.000Z``) of a time in ms since the epoch."""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def tag(element: Element) -> str:
    """An element's name without its namespace."""
    return element.tag.rpartition("}")[2]


def parse(body: bytes) -> Element:
    """The root element of a request body; ``MalformedXML`` for anything else."""
    if len(body) > MAX_XML_BYTES:
        raise S3Error("MalformedXML", "the XML document is too large")
    try:
        root: Element = safe_xml.fromstring(body)
    except Exception:  # ParseError and defusedxml's refusals (entities, DTDs) alike
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our "
            "published schema",
        ) from None
    return root


def children(element: Element, name: str) -> list[Element]:
    return [c for c in element if tag(c) == name]


def child_text(element: Element, name: str, *, strip: bool = True) -> str | None:
    """The text of ``element``'s child ``name``; ``strip=False`` for a key, whose spaces
    are its own (``" "`` is a key)."""
    for c in element:
        if tag(c) == name:
            text = c.text or ""
            return text.strip() if strip else text
    return None
