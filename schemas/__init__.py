"""Avro schemas of every Tocsin event, every version ever released, and the codec.

The ``.avsc`` files under ``schemas/avro`` are named ``<Record>.v<N>.avsc``;
a released file is never edited, a change is a new version.
"""

from tocsin.schemas.codec import Codec, SchemaRegistry, default_codec

__all__ = ["Codec", "SchemaRegistry", "default_codec"]
