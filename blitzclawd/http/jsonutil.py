"""orjson in and out of aiohttp (blitzclawd.web_json, shared with the proxy)."""

from blitzclawd.web_json import json_response

__all__ = ["json_response"]
