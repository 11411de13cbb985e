"""Download test helpers: a real HTTP server on 127.0.0.1 serving a temp folder, and RecBole's ml-100k
fixture archives (``ml-100k.zip`` holds atomic files, ``MovieLens-KG.zip`` KB4Rec's raw headerless files:
link.kg, relation.kg, hop1-3.kg, extra.kg)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

ATOMIC = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     "1\t10\t4\t5\n1\t20\t3\t6\n2\t10\t5\t7\n2\t30\t1\t8\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\n10\tToy Story\n",
    "ml-100k.user": "user_id:token\tage:token\n1\t20\n2\t30\n",
}
# KB4Rec raw files: item 20 is listed twice (the last entity wins), item 99 is not in the .inter file,
# film.film.language is not a selected relation; relation.kg has CRLF line ends.
KB4REC = {
    "link.kg": "10\tm.a\n20\tm.old\n99\tm.z\n20\tm.b\n",
    "relation.kg": "film.film.actor\r\nfilm.film.genre\r\n",
    "hop1.kg": ("m.a\tfilm.film.actor\tm.actor1\n"   # kept: head is a seed
                "m.a\tfilm.film.language\tm.en\n"   # relation not selected
                "m.c\tfilm.film.genre\tm.b\n"       # kept: tail is a seed
                "m.q\tfilm.film.actor\tm.r\n"       # touches no seed
                "m.z\tfilm.film.actor\tm.y\n"       # entity of an item that is not in the .inter file
                "m.old\tfilm.film.actor\tm.y\n"),   # the overridden link
    "hop2.kg": "m.actor1\tfilm.film.actor\tm.d\nm.a\tfilm.film.actor\tm.e\n",
    "hop3.kg": "m.d\tfilm.film.actor\tm.f\n",
    "extra.kg": ("m.b\tfilm.film.genre\tm.g\n"          # touches a hop-1 seed
                 "m.actor1\tfilm.film.genre\tm.h\n"     # touches a hop-2 seed only
                 "m.a\tfilm.film.actor\tm.actor1\n"),   # duplicate of a hop-1 triple
}
LINK = "item_id:token\tentity_id:token\n10\tm.a\n20\tm.b\n"
KG_HOP1 = ("head_id:token\trelation_id:token\ttail_id:token\n"
           "m.a\tfilm.film.actor\tm.actor1\nm.c\tfilm.film.genre\tm.b\nm.b\tfilm.film.genre\tm.g\n")
ATOMIC_URL = "ProcessedDatasets/MovieLens/ml-100k.zip"
KG_URL = "KGDatasets/MovieLens-KG.zip"


def write_zip(path: Path, files: dict[str, str], folder: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(folder + name, text)
    return path


def write_archives(www: Path, *, inter: str = ATOMIC["ml-100k.inter"], kg_folder: str = "") -> None:
    write_zip(www / ATOMIC_URL, {**ATOMIC, "ml-100k.inter": inter})
    write_zip(www / KG_URL, KB4REC, kg_folder)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files and records the paths asked for."""

    requests: list[str]

    def do_GET(self):  # http.server calls this name
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


def closed_port_url() -> str:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def serve(www: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``www`` on a free port of 127.0.0.1; yield its base URL and the list of paths requested."""
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def assert_nothing_installed(folder: Path) -> None:
    """No atomic file, temporary folder, partial file or empty folder left behind by a failed first download."""
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())
