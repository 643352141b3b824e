"""All configuration in one place, read from the environment with the MRE_ prefix."""

from __future__ import annotations

import re
from functools import cache

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A CSP host source for frame-ancestors: 'self', 'none', or scheme://host[:port], host maybe *.-led.
FRAME_SOURCE = re.compile(r"'self'|'none'|https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MRE_")

    host: str = "127.0.0.1"  # loopback by default; set 0.0.0.0 to serve a classroom network
    port: int = 8000
    workers: int = 1  # the server is stateless, so more workers simply serve more students
    # A lab spec is a few hundred bytes; anything far larger is a mistake or an attack.
    max_body_bytes: int = 16 * 1024
    # The custom module: most elements one member's tensor may have.
    custom_max_elements: int = 4096
    # Cold torch work (a report, matrix or experiment of a never-seen spec) runs off the event loop in
    # at most this many threads; a request waiting longer than build_wait_seconds for one gets a 503.
    build_threads: int = 4
    build_wait_seconds: float = 10.0
    # Finished responses kept per process (bounded, so memory stays flat under any traffic).
    response_cache_entries: int = 2048
    # The checkpoint inspector: on unless turned off; an upload is streamed to a temporary file
    # (in checkpoint_tmp_dir, the system's by default) and removed when the answer is sent.
    checkpoints: bool = True
    checkpoint_max_bytes: int = 2 * 1024**3
    checkpoint_legacy_max_bytes: int = 1024**3  # torch's legacy format is read whole into memory
    checkpoint_header_max_bytes: int = 16 * 1024**2  # a safetensors JSON header
    checkpoint_max_entries: int = 100_000  # tensors and values listed, zip members
    checkpoint_slots: int = 2  # inspections at a time per process; others wait for a slot
    checkpoint_wait_seconds: float = 30.0  # then get a 503
    # Uploads in progress per process, from the first byte to the answer (each holds a temporary file
    # of up to checkpoint_max_bytes): one more gets a 503 at once, before a byte is written.
    checkpoint_uploads: int = 4
    checkpoint_tmp_dir: str | None = None
    # Real architectures built by transformers (imported at start-up): on unless off.
    architectures: bool = True
    # A full-size architecture is built with real values (on the CPU or a GPU) when its float32 weights
    # and buffers take at most this (GPT-2, BERT-base, ResNet-50, ViT-B/16); larger ones on meta only.
    architecture_max_bytes: int = 2 * 1000**3
    # A pasted config.json (any model_type transformers knows) is built and measured in a child process:
    # its JSON at most this big (413), the child's memory beyond its start (413) and CPU seconds (504;
    # the wall-clock deadline is twice that, plus 10 s).
    architecture_config_max_bytes: int = 64 * 1024
    architecture_config_memory_bytes: int = 2 * 1024**3
    architecture_config_seconds: int = 30
    # A pasted config opens in the lab (/?preset=config:<digest>) when its parameters and buffers, counted
    # in that child, hold at most lab_config_max_elements elements (ten times the tiny catalogue ones):
    # the lab builds it with real values in the server's own process. (custom_max_elements caps one
    # custom tensor; even llama_tiny's embedding is 4 times it.) Such configs are kept in
    # lab_config_dir (the system's temporary folder by default), shared by every worker and kept across
    # restarts so the lab's permalink works, at most lab_config_files of them (each at most
    # architecture_config_max_bytes), the least recently opened removed first.
    lab_config_max_elements: int = 1_000_000
    lab_config_dir: str | None = None
    lab_config_files: int = 1000
    # Sites that may show the lab in an iframe (embed=1), e.g. "https://slides.example.org 'self'";
    # none by default. Each is a CSP source: 'self', or a scheme://host[:port] (a leading *. allowed).
    frame_ancestors: str = ""
    # FastAPI's OpenTelemetry spans, metrics and logs, for an operator who configured providers.
    telemetry: bool = False
    # One intra-op thread per process: requests are tiny, and workers, not threads, give parallelism.
    torch_threads: int = 1
    # Checkpoint inspection limits. Each inspection runs in a child process of its own, and these
    # bound what one file can cost that child; the answer names the setting it hit.
    checkpoint_memory_bytes: int = 1024**3  # memory beyond the child's start and the file: 413
    checkpoint_cpu_seconds: int = 30  # CPU time (1 GiB takes about 1 s, 100k tensors 10-20 s): 504
    checkpoint_wall_seconds: float = 60.0  # from the child's start to its answer: 504
    checkpoint_report_max_bytes: int = 64 * 1024**2  # the JSON report (99k tensors: 31 MB): 413
    checkpoint_pickle_max_bytes: int = 64 * 1024**2  # a zip's data.pkl unpacked: structure, not tensors
    # Comparing two checkpoints: a tensor of more elements is compared by shape and dtype only.
    checkpoint_compare_max_elements: int = 2**26
    # Every grace period of an upload, from its start and sliding, must bring this many bytes a
    # second (a client that trickles its body would otherwise hold a connection and a temp file for
    # ever, however much it sent first): 408.
    checkpoint_upload_min_bytes_per_second: int = 16 * 1024
    checkpoint_upload_grace_seconds: float = 30.0
    # HTTP limits, for an open classroom network (README "HTTP limits").
    # Request headers in all, as on the wire: a browser sends 1-3 KB; larger gets a 431.
    max_header_bytes: int = 16 * 1024
    # Path and query: the largest custom spec is under 3 KB; larger gets a 414.
    max_url_bytes: int = 8 * 1024
    # The HTTP cache's bodies (plain and gzipped) and keys, in all: entries alone do not bound memory.
    response_cache_bytes: int = 64 * 1024**2
    # Connections (app/serving.py; python -m app). Idle after a response: closed after this long.
    keep_alive_seconds: int = 5
    # A request head must be whole this long after the connection opened or the last response:
    # a slow classroom link sends a head in well under a second; a half-sent one is an attack.
    head_timeout_seconds: float = 10.0
    # A body that sends nothing for this long (an upload on a slow link still sends every second).
    body_timeout_seconds: float = 30.0
    # A client that reads nothing of what was sent to it for this long is dropped: one that sends
    # requests and never reads would otherwise hold the server's buffers for them for ever.
    send_timeout_seconds: float = 30.0
    # Bytes a request head may make the server buffer before it is whole (then 431, closed).
    # Above the app's own caps (headers and URL), which answer the usual oversized head.
    max_head_buffer_bytes: int = 64 * 1024

    # Classes (follow mode, votes). Rooms, snapshots and votes live in this process, unless a Redis
    # URL is given (redis://host:6379/0): then in Redis, and any number of workers serve one class.
    redis_url: str = ""
    # The address students open (join link and QR code), e.g. http://10.0.0.5:8000; by default the
    # one the teacher's browser used, which on the projector itself may be 127.0.0.1.
    class_url: str = ""
    class_max_rooms: int = 100
    class_max_rooms_per_client: int = 5  # started from one address: nobody takes every room
    class_max_students: int = 300  # per room
    class_max_votes: int = 20_000  # per room, all steps together
    class_max_streams: int = 2000  # open event streams per process
    # Per client address: a whole class behind one NAT address (or a proxy not trusted for its
    # X-Forwarded-For) shares one, so these admit a full class; on a network where every student
    # has an address of their own, lower them (5 joins, 8 streams) to bound one mischievous laptop.
    class_max_joins_per_client: int = 300  # per room
    class_max_streams_per_client: int = 320  # per process: a class and its teacher
    class_expiry_seconds: float = 3 * 3600.0  # a room nobody changed or joined this long ends
    class_failed_joins_per_minute: int = 20  # per client address: guessing codes gets a 429
    # Redis: one blocking pool per process; past this many connections at once a class operation
    # waits up to the timeout for one (a class joining together) instead of being refused.
    class_redis_connections: int = 64
    class_redis_wait_seconds: float = 10.0
    # An event stream is closed after this long and the browser reconnects (getting the whole state
    # again), so a stream that stopped reading is never held for ever.
    class_stream_seconds: float = 300.0
    class_heartbeat_seconds: float = 15.0  # a comment on an idle stream: proxies keep it, a gone client shows
    # On shutdown, open requests (event streams never end by themselves) get this long, then close.
    shutdown_grace_seconds: float = 5.0

    @field_validator("frame_ancestors")
    @classmethod
    def _sources(cls, value: str) -> str:
        # It goes into a header: nothing that could end the directive or the header.
        for source in value.split():
            if not FRAME_SOURCE.fullmatch(source):
                raise ValueError(f"{source!r} is not a frame-ancestors source ('self', https://host[:port])")
        return value


@cache
def get_settings() -> Settings:
    return Settings()
