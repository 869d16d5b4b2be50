"""The channel to the helper, shared by both fronts (gevent, gprocket.aio).

``wire`` encodes and decodes the helper's protocol (no I/O: helper/PROTOCOL.md);
``fdpass`` receives a reply and its descriptor and checks the descriptor
(``fdpass_build`` compiles its hot path); ``spawn`` starts the helper with
posix_spawn; ``helper`` finds and judges the helper, builds its command line
and turns a reply into a descriptor or the error it means.

Imports only the package's core (_errors, _spec, _environ, _socket): never
the ladder, the layers above it or a front.
"""
