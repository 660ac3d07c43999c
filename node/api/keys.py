"""Typed keys for what the web application and its requests carry."""

from __future__ import annotations

from typing import Any

from aiohttp import web

NODE: web.AppKey[Any] = web.AppKey("node", object)
