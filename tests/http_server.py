"""A small HTTP file server on 127.0.0.1 for download tests, with switchable faults."""

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileServer(http.server.ThreadingHTTPServer):
    root: Path
    cut_first: bool = False  # the first GET of each file stops half-way
    fail_status: int | None = None  # every GET answers this status
    delay_s: float = 0.0  # wait before answering
    requests: list[tuple[str, str | None]]  # (path, Range header)


class Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        time.sleep(srv.delay_s)
        if srv.fail_status:
            self.send_error(srv.fail_status)
            return
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = sum(p == self.path for p, _ in srv.requests) == 1
        if srv.cut_first and first:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def serve(root: Path, **faults) -> Iterator[tuple[str, FileServer]]:
    """Serve `root` on a free port; yields the base URL and the server (to read its log)."""
    server = FileServer(("127.0.0.1", 0), Handler)
    server.root = Path(root)
    server.requests = []
    for key, value in faults.items():
        setattr(server, key, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
