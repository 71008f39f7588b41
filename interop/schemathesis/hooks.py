"""Schemathesis hooks for docgate: how to send a tus body (`application/offset+octet-stream`,
raw bytes), a media type Schemathesis does not know. Loaded with SCHEMATHESIS_HOOKS=hooks."""
import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8")
