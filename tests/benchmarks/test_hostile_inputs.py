"""Hostile benchmark files: bad rows among good rows in TSV, JSONL and Parquet, image
references that reach outside the data, remote URLs, and a pixel bomb under Pillow's own limit.

Each case asserts the reason a user reads AND that every good row was loaded."""
from __future__ import annotations

import base64
import http.server
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import fsspec
import pandas as pd
import polars as pl
import pytest
from PIL import Image

from g2u_tasks import images as imaging
from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ImagesConfig, RunConfig

REPO = Path(__file__).resolve().parents[2]


def png(colour=(255, 0, 0), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


RED, GREEN = png((255, 0, 0)), png((0, 255, 0))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bomb_png(width: int = 12000, height: int = 12000) -> bytes:
    """A 1-bit grey PNG of width x height, all zeros: ~17 KB on disk, 144 MP declared."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def by_id(items):
    return {it.item_id: it for it in items}


def load_error(item) -> str:
    return item.extra.get("load_error", "")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# ---------------------------------------------------------------- TSV


def good_tsv_rows(n: int = 4) -> list[dict]:
    return [{"index": i, "image": b64(RED), "question": f"Question {i}?", "A": "red", "B": "green", "C": "blue",
             "D": "grey", "answer": "A", "category": "colour"} for i in range(n)]


def tsv_text(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_csv(sep="\t", index=False)  # what VLMEvalKit writes


def test_tsv_unbalanced_quote_quarantines_only_that_row(tmp_path):
    rows = good_tsv_rows(6)
    rows[4]["question"] = 'Line one\nline two with a "quoted" word'  # a legitimately quoted multi-line cell
    lines = tsv_text(rows).split("\n")
    lines[3] = lines[3].replace("Question 2?", '"Question 2 with an unbalanced quote?')  # header is line 1
    path = tmp_path / "t.tsv"
    path.write_text("\n".join(lines))
    with pytest.raises(Exception):  # what used to happen: the whole file rejected, no row named
        pl.read_csv(path, separator="\t", quote_char='"', infer_schema=False, truncate_ragged_lines=True)

    items = by_id(load_benchmark("T", str(path)))
    assert list(items) == ["0", "1", "row-3", "3", "4", "5"]  # every good row, in file order
    assert all(items[k].image_error is None and "load_error" not in items[k].extra for k in "01345")
    assert items["4"].question == 'Line one\nline two with a "quoted" word'
    assert load_error(items["row-3"]).startswith("row 3: malformed TSV row at line 4: unbalanced quote (")
    assert items["row-3"].extra["raw_row"].startswith("2\t")  # the start of the broken line, for the record
    assert [it.item_id for it in load_benchmark("T", str(path), limit=3)] == ["0", "1", "row-3"]  # file rows


def test_tsv_unbalanced_quote_closed_by_a_later_quote_and_ragged_rows(tmp_path):
    rows = good_tsv_rows(7)
    rows[5]["question"] = 'Has "quotes"'  # pandas quotes this cell: the stray quote meets it
    lines = tsv_text(rows).split("\n")
    lines[2] = lines[2].replace("Question 1?", '"Question 1')  # row 2 (line 3): quote never closed
    lines[4] = lines[4] + "\textra cell"  # row 4 (line 5): one cell too many
    lines[5] = lines[5].rsplit("\t", 2)[0]  # row 5 (line 6): two cells missing
    path = tmp_path / "t.tsv"
    path.write_text("\n".join(lines))

    items = by_id(load_benchmark("T", str(path)))
    assert list(items) == ["0", "row-2", "2", "row-4", "row-5", "5", "6"]
    assert load_error(items["row-2"]).startswith("row 2: malformed TSV row at line 3: unbalanced quote (")
    assert load_error(items["row-4"]) == "row 4: malformed TSV row at line 5: 10 cells, the header has 9"
    assert load_error(items["row-5"]) == "row 5: malformed TSV row at line 6: 7 cells, the header has 9"
    assert items["5"].question == 'Has "quotes"' and "load_error" not in items["5"].extra


def test_tsv_is_read_as_a_stream_with_images_read_back_by_position(tmp_path):
    """Rows keep their image cells' places in the file, not their text; each item gets its own
    image (or its pointer's) read back by seek, around broken rows, with CRLF lines and a BOM."""
    from g2u_tasks.benchmarks.loaders import TsvCell, _read_tsv

    colours = [png((30 * i, 0, 0)) for i in range(8)]
    rows = good_tsv_rows(8)
    for i, row in enumerate(rows):
        row["image"] = b64(colours[i])
    rows[6]["image"], rows[7]["image"] = "2", "5"  # pointers: to a good row, to a broken one
    lines = tsv_text(rows).split("\n")
    lines[4] = lines[4].replace("Question 3?", '"Question 3')  # row 4 (line 5): quote never closed
    lines[6] = lines[6] + "\textra"  # row 6 (line 7): one cell too many
    path = tmp_path / "t.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())

    with open(path, "rb") as f:
        table = _read_tsv(f)
    assert table.columns[0] == "index" and table.numbers == [1, 2, 3, 5, 7, 8]
    assert all(isinstance(r["image"], TsvCell) for r in table.rows[:4]) and table.rows[4]["image"] == "2"

    items = by_id(load_benchmark("T", str(path)))
    assert list(items) == ["0", "1", "2", "row-4", "4", "row-6", "6", "7"]
    for i in (0, 1, 2, 4):
        assert items[str(i)].images == (colours[i],) and "load_error" not in items[str(i)].extra
    assert items["6"].images == (colours[2],)  # the pointer's row, read back from its place
    assert load_error(items["row-4"]).startswith("row 4: malformed TSV row at line 5: unbalanced quote (")
    assert load_error(items["row-6"]) == "row 6: malformed TSV row at line 7: 10 cells, the header has 9"
    assert items["7"].image_error == "image 0: dangling image pointer '5' (no row has that index)"


def test_tsv_answer_outside_options_empty_question_blank_index(tmp_path):
    rows = good_tsv_rows(6)
    rows[1]["answer"] = "E"
    rows[2]["question"] = "   "
    rows[3]["index"] = "   "
    rows[4]["index"] = None
    (tmp_path / "t.tsv").write_text(tsv_text(rows))
    items = by_id(load_benchmark("T", str(tmp_path / "t.tsv")))
    assert list(items) == ["0", "1", "2", "row-4", "row-5", "5"]
    assert load_error(items["1"]) == "row 2: answer 'E' is not among the options A, B, C, D"
    assert load_error(items["2"]) == "row 3: empty question"
    assert load_error(items["row-4"]) == "row 4: blank index '   '"  # never the row position
    assert load_error(items["row-5"]) == "row 5: empty index"
    assert "load_error" not in items["0"].extra and "load_error" not in items["5"].extra


def test_quarantine_rows_name_the_row_and_reason(tmp_path):
    """The whole path: loader -> `items` suite -> quarantine rows, with the loader's reason."""
    from g2u_tasks.jobs import screen_items

    rows = good_tsv_rows(5)
    rows[1]["answer"] = "E"
    rows[3]["index"] = " "
    lines = tsv_text(rows).split("\n")
    lines[3] = lines[3].replace("Question 2?", '"Question 2')
    (tmp_path / "t.tsv").write_text("\n".join(lines))
    items = load_benchmark("T", str(tmp_path / "t.tsv"))

    kept, quarantined = screen_items(items, "run-1")
    assert [it.item_id for it in kept] == ["0", "4"]
    reasons = {q["item_id"]: q["reason"] for q in quarantined}
    assert set(reasons) == {"1", "row-3", "row-4"}
    # the loader's message leads, whole and unquoted; the suite's other reasons follow
    assert reasons["1"] == "T/1: row 2: answer 'E' is not among the options A, B, C, D"
    assert reasons["row-3"].startswith("T/row-3: row 3: malformed TSV row at line 4: unbalanced quote (the quoted "
                                       "cell never closes); answer: gold answer missing; n_images: item has no image")
    assert "extra:" not in reasons["row-3"]
    assert reasons["row-4"] == "T/row-4: row 4: blank index ' '"


def test_quarantine_reason_is_the_loaders_whole_message():
    """Reasons longer than the suite's 200-character quote reach the quarantine row whole; the GE
    expectation on `extra` stays the gate."""
    from g2u_tasks.jobs import screen_items
    from g2u_tasks.records import Item, images_sha256

    long_error = "row 7: " + "; ".join(f"problem {i} with a long explanation of what is wrong" for i in range(8))
    long_image = "image 0: image file not found: " + "deep/" * 60 + "x.png"
    good = Item("T", "ok", "Q?", {}, "Yes", None, "yes_no", images_sha256((RED,)), (RED,))
    bad = Item("T", "bad", "Q?", {}, "Yes", None, "yes_no", images_sha256((RED,)), (RED,),
               extra={"load_error": long_error, "raw_row": "x" * 500})
    no_image = Item("T", "img", "Q?", {}, "Yes", None, "yes_no", "", (), image_error=long_image)
    kept, quarantined = screen_items([good, bad, no_image], "run-1")
    assert [it.item_id for it in kept] == ["ok"]
    reasons = {q["item_id"]: q["reason"] for q in quarantined}
    assert len(long_error) > 300 and reasons["bad"] == f"T/bad: {long_error}"
    assert f"image_error: image unreadable: {long_image}" in reasons["img"] and len(long_image) > 300
    assert reasons["img"].startswith("T/img: image_error: image unreadable: image 0:")


# ---------------------------------------------------------------- JSONL and Parquet rows


def test_jsonl_malformed_lines_become_quarantine_rows(tmp_path):
    (tmp_path / "r.png").write_bytes(RED)
    path = write_jsonl(tmp_path / "b.jsonl", [
        {"id": "a", "question": "Q a", "answer": "yes", "image": "r.png"},
        "{not json",
        "[1, 2, 3]",
        "",
        {"id": "b", "question": "Q b", "answer": "no", "image": "r.png"},
        {"id": "c", "question": "", "answer": "no", "image": "r.png"},
        {"id": "d", "question": "Q d", "options": ["x", "y"], "answer": "C", "image": "r.png"},
        {"id": "\t", "question": "Q e", "answer": "no", "image": "r.png"},
    ])
    items = by_id(load_benchmark("J", str(path)))
    assert list(items) == ["a", "row-2", "row-3", "b", "c", "d", "row-7"]
    assert load_error(items["row-2"]).startswith("row 2: invalid JSON at line 2 (")
    assert load_error(items["row-3"]) == "row 3: line 3 is not a JSON object"
    assert load_error(items["c"]) == "row 5: empty question"
    assert load_error(items["d"]) == "row 6: answer 'C' is not among the options A, B"
    assert load_error(items["row-7"]) == "row 7: blank id '\\t'"
    assert items["a"].images == (RED,) and items["b"].images == (RED,) and "load_error" not in items["b"].extra
    assert [it.item_id for it in load_benchmark("J", str(path), limit=3)] == ["a", "row-2", "row-3"]


def test_parquet_and_jsonl_are_read_as_streams_with_images_read_back(tmp_path):
    """Rows keep ValueCells (None where null) instead of image values; each item gets its own image
    back, across Parquet row groups and JSONL lines, with a limit too."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from g2u_tasks.benchmarks.loaders import ValueCell, _read_jsonl, _read_parquet

    colours = [png((20 * i, 0, 0)) for i in range(7)]
    images = [{"bytes": c, "path": None} for c in colours]
    images[3] = None  # a null image cell
    pq.write_table(pa.table({"index": [str(i) for i in range(7)], "question": ["Q"] * 7, "answer": ["no"] * 7,
                             "image": images, "blob": [b"x"] * 7}), tmp_path / "b.parquet", row_group_size=3)
    write_jsonl(tmp_path / "b.jsonl", [{"index": str(i), "question": "Q", "answer": "no",
                                        "image": None if i == 3 else b64(c)} for i, c in enumerate(colours)])
    for name, read in (("b.parquet", _read_parquet), ("b.jsonl", _read_jsonl)):
        with open(tmp_path / name, "rb") as f:
            table = read(f, None)
        assert [isinstance(r["image"], ValueCell) for r in table.rows] == [True, True, True, False, True, True, True]
        assert table.rows[3]["image"] is None
        items = load_benchmark("S", str(tmp_path / name))
        assert [it.images for it in items] == [(c,) if i != 3 else () for i, c in enumerate(colours)]
        assert "no image in row" in items[3].image_error
        assert [it.images for it in load_benchmark("S", str(tmp_path / name), limit=5)][4] == (colours[4],)
    # another binary column is deferred too, and read back for the item's extra
    assert load_benchmark("S", str(tmp_path / "b.parquet"))[6].extra["blob"].startswith("<1 bytes sha256=")


def test_parquet_bad_rows_among_good(tmp_path):
    (tmp_path / "r.png").write_bytes(RED)
    df = pl.DataFrame({
        "question_id": ["a", "b", None, "  ", "e", "f"],
        "question": ["Q", "Q", "Q", "Q", None, "Q"],
        "options": [["x", "y"], ["x", "y"], ["x", "y"], ["x", "y"], ["x", "y"], ["x", "y"]],
        "answer": ["A", "Z", "A", "B", "A", "y"],
        "image": [{"bytes": RED, "path": None}, {"bytes": None, "path": "r.png"},
                  {"bytes": None, "path": "../r.png"}, {"bytes": GREEN, "path": None},
                  {"bytes": GREEN, "path": None}, {"bytes": None, "path": "/etc/hostname"}],
    })
    df.write_parquet(tmp_path / "b.parquet")
    items = by_id(load_benchmark("P", str(tmp_path / "b.parquet")))
    assert list(items) == ["a", "b", "row-3", "row-4", "e", "f"]
    assert items["a"].images == (RED,) and "load_error" not in items["a"].extra and items["a"].image_error is None
    assert load_error(items["b"]) == "row 2: answer 'Z' is not among the options A, B" and items["b"].images == (RED,)
    assert load_error(items["row-3"]) == "row 3: empty question_id"
    assert "'../r.png' refused: it resolves outside the benchmark folder" in items["row-3"].image_error
    assert load_error(items["row-4"]) == "row 4: blank question_id '  '"
    assert load_error(items["e"]) == "row 5: empty question"
    assert items["f"].answer == "B" and "'/etc/hostname' refused" in items["f"].image_error


# ---------------------------------------------------------------- paths


@pytest.fixture()
def tree(tmp_path):
    """bench/ (the benchmark folder) with img/, a secret/ beside it, and symlinks both ways."""
    bench, secret = tmp_path / "bench", tmp_path / "secret"
    (bench / "img").mkdir(parents=True)
    secret.mkdir()
    (bench / "img" / "in.png").write_bytes(RED)
    (secret / "x.png").write_bytes(GREEN)
    os.symlink(secret / "x.png", bench / "img" / "escape.png")
    os.symlink(secret, bench / "img" / "escape_dir")
    os.symlink(bench / "img" / "in.png", bench / "inner_link.png")
    return bench, secret


def test_paths_outside_the_benchmark_folder_are_refused(tree):
    bench, secret = tree
    refs = {
        "rel": "img/in.png", "abs_inside": str(bench / "img" / "in.png"), "uri_inside": (bench / "img/in.png").as_uri(),
        "inner_link": "inner_link.png", "dotdot_inside": "img/../img/in.png",
        "dotdot": "../secret/x.png", "dotdot_deep": "../../" * 8 + str(secret / "x.png").lstrip("/"),
        "abs": str(secret / "x.png"), "uri": (secret / "x.png").as_uri(), "file_single_slash": f"file:{secret}/x.png",
        "link": "img/escape.png", "link_dir": "img/escape_dir/x.png",
        "struct_dotdot": {"path": "../secret/x.png"}, "in_list": ["img/in.png", "../secret/x.png"],
    }
    path = write_jsonl(bench / "b.jsonl", [{"id": k, "question": "Q", "answer": "yes", "image": v}
                                           for k, v in refs.items()])
    items = by_id(load_benchmark("J", str(path)))
    assert list(items) == list(refs)
    for k in ("rel", "abs_inside", "uri_inside", "inner_link", "dotdot_inside"):
        assert items[k].images == (RED,) and items[k].image_error is None, k
    for k in ("dotdot", "dotdot_deep", "abs", "uri", "struct_dotdot"):
        assert items[k].images == () and "refused: it resolves outside the benchmark folder and the configured " \
            "image roots (images.roots)" in items[k].image_error, k
    for k in ("link", "link_dir"):
        assert "refused: a symlink leads outside the benchmark folder" in items[k].image_error, k
    assert "scheme 'file' is not the benchmark file's filesystem" in items["file_single_slash"].image_error
    assert items["in_list"].images == (RED,) and items["in_list"].image_error.startswith("image 1: image reference")
    assert all(GREEN not in it.images for it in items.values())  # nothing of secret/ was ingested

    # a configured root opens exactly that folder, from the config too
    allowed = by_id(load_benchmark("J", str(path), images={"roots": [str(secret)]}))
    assert all(allowed[k].images == (GREEN,) and allowed[k].image_error is None
               for k in ("dotdot", "abs", "uri", "link", "link_dir"))


def test_other_filesystems_only_inside_the_benchmark_folder(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/hostile/bench/img/in.png", RED)
    fs.pipe("/hostile/elsewhere/x.png", GREEN)
    fs.pipe("/hostile/bench/b.jsonl", "\n".join(json.dumps({"id": k, "question": "Q", "answer": "no", "image": v})
                                                for k, v in [("rel", "img/in.png"),
                                                             ("uri", "memory://hostile/bench/img/in.png"),
                                                             ("out", "memory://hostile/elsewhere/x.png"),
                                                             ("s3", "s3://bucket/x.png"), ("gs", "gs://bucket/x.png"),
                                                             ("data", "data:text/plain,hello.png"),
                                                             ("inline", "data:image/png;base64," + b64(RED))]).encode())
    try:
        items = by_id(load_benchmark("M", "memory://hostile/bench/b.jsonl"))
    finally:
        fs.rm("/hostile", recursive=True)
    assert items["rel"].images == items["uri"].images == items["inline"].images == (RED,)
    assert "refused: it resolves outside the benchmark folder" in items["out"].image_error
    for k in ("s3", "gs", "data"):
        assert f"scheme {k!r} is not the benchmark file's filesystem" in items[k].image_error, k


# ---------------------------------------------------------------- remote images


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str]] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self.requests.append(("HEAD", self.path))
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        self.requests.append(("GET", self.path))
        if self.path == "/ok.png":
            self._send(RED)
        elif self.path == "/declared-big.png":
            self._send(RED, length=10**9)
        elif self.path == "/undeclared-big.png":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 1024)
        elif self.path == "/slow.png":  # drips bytes: every read is fast, the whole is not
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.send_response(404)
            self.end_headers()

    def _send(self, body: bytes, length: int | None = None):
        self.send_response(200)
        self.send_header("Content-Length", str(length if length is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    _Recorder.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.requests
    httpd.shutdown()
    httpd.server_close()


def remote_rows(base: str) -> list[dict]:
    names = ["ok.png", "declared-big.png", "undeclared-big.png", "slow.png", "missing.png"]
    return [{"id": n.split(".")[0], "question": "Q", "answer": "no", "image": f"{base}/{n}"} for n in names] + [
        {"id": "local", "question": "Q", "answer": "no", "image": b64(GREEN)},
        {"id": "ftp", "question": "Q", "answer": "no", "image": "ftp://127.0.0.1/x.png"}]


def test_remote_images_off_by_default_and_no_request_made(tmp_path, server):
    base, requests = server
    path = write_jsonl(tmp_path / "b.jsonl", remote_rows(base))
    items = by_id(load_benchmark("R", str(path)))
    assert requests == []  # the server saw nothing: no HEAD, no GET
    assert len(items) == 7 and items["local"].images == (GREEN,)
    assert items["ok"].image_error == f"image 0: remote image '{base}/ok.png' refused: images.allow_remote is off"
    assert "scheme 'ftp' is not the benchmark file's filesystem" in items["ftp"].image_error


def test_remote_images_when_allowed_are_capped_in_size_and_time(tmp_path, server):
    base, requests = server
    path = write_jsonl(tmp_path / "b.jsonl", remote_rows(base))
    policy = ImagesConfig(allow_remote=True, remote_max_bytes=4096, remote_timeout_s=0.5)
    started = time.monotonic()
    items = by_id(load_benchmark("R", str(path), images=policy))
    assert time.monotonic() - started < 10
    assert items["ok"].images == (RED,) and items["ok"].image_error is None
    assert "refused: 1000000000 bytes is over images.remote_max_bytes (4096)" in items["declared-big"].image_error
    assert "refused: more than images.remote_max_bytes (4096) bytes" in items["undeclared-big"].image_error
    assert "no complete answer within images.remote_timeout_s (0.5 s)" in items["slow"].image_error
    assert items["missing"].image_error.endswith("HTTP 404")
    assert items["local"].images == (GREEN,)
    assert "scheme 'ftp'" in items["ftp"].image_error  # allow_remote is http(s) only
    assert sorted(m for m, _ in requests) == ["GET"] * 5


# ---------------------------------------------------------------- pixel budget


# Peak RSS of a fresh process (VmHWM: ru_maxrss would carry the parent's peak over exec), reset
# just before the measured call so that imports do not count.
_MEASURE = """
import sys, time
from pathlib import Path
def peak():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024
data = Path(sys.argv[1]).read_bytes()
mode = sys.argv[2]
if mode == "loader":
    from g2u_tasks.benchmarks.loaders import load_benchmark
    load_benchmark("warm", sys.argv[3])  # imports and first-call costs outside the measure
Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
before, t0 = peak(), time.perf_counter()
if mode == "decode":
    from g2u_tasks import images
    try:
        images.decode(data)
        result = "decoded"
    except images.ImageTooLarge as exc:
        result = str(exc)
elif mode == "loader":
    result = load_benchmark("B", sys.argv[4])[0].image_error
else:  # control: what decoding the same bytes costs
    from PIL import Image
    import io
    Image.MAX_IMAGE_PIXELS = None
    img = Image.open(io.BytesIO(data)); img.load()
    result = img.size
print(repr((peak() - before, time.perf_counter() - t0, result)))
"""


def _measure(tmp_path: Path, mode: str, *paths: Path) -> tuple[int, float, object]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "bomb.png"), mode, *map(str, paths)],
                         check=True, capture_output=True, text=True, cwd=REPO)
    import ast

    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory measured through Linux /proc")
def test_pixel_bomb_is_refused_from_the_header_with_bounded_memory(tmp_path):
    bomb = bomb_png()
    assert len(bomb) < 40_000  # tiny on disk, 144 MP declared, under Pillow's own bomb limit
    (tmp_path / "bomb.png").write_bytes(bomb)
    write_jsonl(tmp_path / "warm.jsonl", [{"id": "w", "question": "Q", "answer": "no", "image": b64(RED)}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "bomb", "question": "Q", "answer": "no", "image": "bomb.png"}])

    grown, seconds, message = _measure(tmp_path, "decode")
    assert message == "image 12000x12000 (144.0 MP) is over the pixel budget of 64.0 MP"
    assert seconds < 1.0 and grown < 20 * 2**20, (grown, seconds)
    grown, seconds, error = _measure(tmp_path, "loader", tmp_path / "warm.jsonl", tmp_path / "b.jsonl")
    assert error == "image 0: image 12000x12000 (144.0 MP) is over the pixel budget of 64.0 MP; " \
                    "refused (images.oversize: refuse)"
    assert seconds < 1.0 and grown < 20 * 2**20, (grown, seconds)
    grown, _, size = _measure(tmp_path, "control")  # the measure sees a decode: 144 MB at 1 byte/pixel
    assert size == (12000, 12000) and grown > 100 * 2**20


def test_pixel_budget_from_config_refuses_or_downscales(tmp_path):
    rows = [{"id": "small", "question": "Q", "answer": "no", "image": b64(png(size=(500, 400)))},
            {"id": "over", "question": "Q", "answer": "no", "image": b64(png(size=(2000, 1000)))},
            {"id": "far_over", "question": "Q", "answer": "no", "image": b64(png(size=(3000, 3000)))}]
    path = write_jsonl(tmp_path / "b.jsonl", rows)
    refused = by_id(load_benchmark("B", str(path), images={"max_pixels": 1_000_000}))
    assert refused["small"].image_error is None and refused["far_over"].images == ()
    assert refused["over"].image_error == ("image 0: image 2000x1000 (2.0 MP) is over the pixel budget of 1.0 MP; "
                                           "refused (images.oversize: refuse)")

    scaled = by_id(load_benchmark("B", str(path), images={"max_pixels": 1_000_000, "oversize": "downscale"}))
    assert scaled["over"].image_error is None
    assert Image.open(io.BytesIO(scaled["over"].images[0])).size == (1414, 707)
    assert scaled["over"].extra["image_note"] == "image 0: downscaled from 2000x1000 to 1414x707 (pixel budget 1.0 MP)"
    assert scaled["far_over"].image_error == ("image 0: image 3000x3000 (9.0 MP) is over the pixel budget of 1.0 MP "
                                              "and too large to downscale within 4x the budget")
    assert scaled["small"].images == refused["small"].images and "image_note" not in scaled["small"].extra


def test_decode_enforces_the_budget():
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(imaging.ImageTooLarge, match="over the pixel budget of 64.0 MP"):
        imaging.decode(bomb_png())  # Pillow warns at 89 MP and raises only at 179 MP
    with pytest.raises(imaging.ImageTooLarge, match=r"image 8x8 \(0.0 MP\) is over the pixel budget"):
        imaging.decode(RED, max_pixels=63)
    assert imaging.decode(RED).size == (8, 8)


# ---------------------------------------------------------------- config


def test_image_policy_config_keys(tmp_path):
    base = {"benchmarks": [{"name": "X", "source": "x.tsv"}], "understander": {"backend": "transformers"}}
    cfg = RunConfig.model_validate(base)
    assert cfg.images == ImagesConfig() and cfg.images.allow_remote is False and cfg.images.roots == []
    assert cfg.images.max_pixels == imaging.DEFAULT_MAX_PIXELS and cfg.images.oversize == "refuse"
    assert cfg.fingerprint() == RunConfig.model_validate({**base, "images": {}}).fingerprint()  # run ids unchanged
    assert cfg.fingerprint() != RunConfig.model_validate({**base, "images": {"oversize": "downscale"}}).fingerprint()
    for bad in ({"max_pixels": imaging.DEFAULT_MAX_PIXELS + 1}, {"max_pixels": 0}, {"oversize": "crop"},
                {"remote_timeout_s": 0}, {"remote_max_bytes": 0}, {"allow_remote": "sometimes"}, {"root": ["x"]}):
        with pytest.raises(ValueError, match="images"):
            RunConfig.model_validate({**base, "images": bad})


def test_jobs_load_items_passes_the_policy(tree):
    from g2u_tasks import jobs

    bench, secret = tree
    path = write_jsonl(bench / "b.jsonl", [{"id": "a", "question": "Q", "answer": "no", "image": "../secret/x.png"}])
    base = {"benchmarks": [{"name": "HostileBench", "source": str(path)}], "understander": {"backend": "transformers"}}
    assert "refused" in jobs.load_items(RunConfig.model_validate(base))[0].image_error
    opened = jobs.load_items(RunConfig.model_validate({**base, "images": {"roots": [str(secret)]}}))
    assert opened[0].images == (GREEN,)


# ---------------------------------------------------------------- custom TSVs (final_image_path_ori) and images_root


def custom_tsv(folder: Path, refs: dict[str, str | None], ori: dict[str, str] | None = None) -> Path:
    """A KIVA/MyVQABench-style TSV: one row per reference (None: no final_image_path_ori, so the
    `<ori_Bench>/<index>.png` fallback applies)."""
    rows = [{"index": k, "question": f"Q {k}?", "A": "x", "B": "y", "answer": "A",
             "ori_Bench": (ori or {}).get(k, "KIVA"), "final_image_path_ori": None if v is None else f"['{v}']"}
            for k, v in refs.items()]
    path = folder / "KIVA.tsv"
    path.write_text(tsv_text(rows))
    return path


def test_custom_tsv_images_are_confined_like_every_other_reference(tree, server):
    bench, secret = tree
    base, requests = server
    (bench / "images" / "KIVA").mkdir(parents=True)
    (bench / "images" / "KIVA" / "a.png").write_bytes(RED)
    (bench / "images" / "KIVA" / "fallback.png").write_bytes(RED)
    (bench / "beside.png").write_bytes(RED)
    os.symlink(secret / "x.png", bench / "images" / "KIVA" / "escape.png")
    refs = {
        "rel": "KIVA/a.png", "beside": "../beside.png", "fallback": None,  # inside the benchmark folder
        "dotdot": "../../secret/x.png", "abs": str(secret / "x.png"), "etc": "/etc/hostname",
        "uri": (secret / "x.png").as_uri(), "link": "KIVA/escape.png", "remote": f"{base}/ok.png",
        "ori_escape": None, "missing": "KIVA/none.png",
    }
    path = custom_tsv(bench, refs, ori={"ori_escape": "../../secret"})
    (secret / "ori_escape.png").write_bytes(GREEN)
    items = by_id(load_benchmark_spec("KIVA", str(path)))
    assert list(items) == list(refs)  # no row lost
    for k in ("rel", "beside", "fallback"):
        assert items[k].images == (RED,) and items[k].image_error is None, k
    for k in ("dotdot", "abs", "etc", "uri", "ori_escape"):
        assert items[k].images == () and "refused: it resolves outside the benchmark folder and the configured " \
            "image roots (images.roots)" in items[k].image_error, (k, items[k].image_error)
    assert "'../../secret/x.png': image reference" in items["dotdot"].image_error  # as written, then resolved
    assert "refused: a symlink leads outside" in items["link"].image_error
    assert items["remote"].image_error == f"image 0: remote image '{base}/ok.png' refused: images.allow_remote is off"
    assert requests == []
    assert items["missing"].image_error == "image 0: image file not found: KIVA/none.png"
    assert all(GREEN not in it.images for it in items.values())

    # the quarantine names each refused row; the good rows pass
    from g2u_tasks.jobs import screen_items

    kept, quarantined = screen_items(list(items.values()), "run-1")
    assert [it.item_id for it in kept] == ["rel", "beside", "fallback"]
    assert {q["item_id"] for q in quarantined} == set(refs) - {"rel", "beside", "fallback"}
    assert all("image unreadable: image 0: " in q["reason"] for q in quarantined)

    # a configured root opens exactly that folder
    allowed = by_id(load_benchmark_spec("KIVA", str(path), images={"roots": [str(secret)]}))
    assert all(allowed[k].images == (GREEN,) for k in ("dotdot", "abs", "uri", "link", "ori_escape"))
    assert "refused" in allowed["etc"].image_error


def test_explicit_images_root_is_an_allowed_root_and_relative_roots_join_once(tmp_path, monkeypatch):
    data, shared = tmp_path / "data", tmp_path / "shared"
    (data / "images" / "scene").mkdir(parents=True)
    (data / "pics" / "scene").mkdir(parents=True)
    (shared / "scene").mkdir(parents=True)
    (data / "images" / "scene" / "a.png").write_bytes(RED)
    (data / "pics" / "scene" / "a.png").write_bytes(GREEN)
    (shared / "scene" / "a.png").write_bytes(GREEN)
    (tmp_path / "secret.png").write_bytes(GREEN)
    pl.DataFrame({"question": ["How far?", "How far?"], "answer_value": [1.5, 2.0], "answer_unit": ["meters"] * 2,
                  "question_type": ["distance"] * 2, "image_path": ["scene/a.png", "../../secret.png"],
                  "image": [None, None]}, schema_overrides={"image": pl.Struct({"bytes": pl.Binary, "path": pl.String})}
                 ).write_parquet(data / "q.parquet")
    monkeypatch.chdir(tmp_path)  # a relative source: data/q.parquet

    default = load_benchmark_spec("QSpatial_scannet", "data/q.parquet")
    assert default[0].images == (RED,) and default[0].image_error is None  # data/images, joined once
    assert "refused: it resolves outside" in default[1].image_error
    relative = load_benchmark_spec("QSpatial_scannet", "data/q.parquet", images_root="pics")
    assert relative[0].images == (GREEN,)  # data/pics: relative to the benchmark file's folder
    explicit = load_benchmark_spec("QSpatial_scannet", "data/q.parquet", images_root=str(shared))
    assert explicit[0].images == (GREEN,) and explicit[0].image_error is None  # outside data/, but configured
    assert "refused" in explicit[1].image_error  # the explicit root allows itself, nothing more

    kiva = data / "KIVA.tsv"
    kiva.write_text(tsv_text([{"index": 0, "question": "Q?", "A": "x", "B": "y", "answer": "A",
                               "final_image_path_ori": "['scene/a.png']"}]))
    assert load_benchmark_spec("KIVA", "data/KIVA.tsv")[0].images == (RED,)
    assert load_benchmark_spec("KIVA", "data/KIVA.tsv", images_root="pics")[0].images == (GREEN,)
    assert load_benchmark_spec("KIVA", "data/KIVA.tsv", images_root=str(shared))[0].images == (GREEN,)


def test_custom_tsv_on_another_filesystem_stays_inside_its_folder():
    fs = fsspec.filesystem("memory")
    fs.pipe("/custom_tsv/bench/images/KIVA/a.png", RED)
    fs.pipe("/custom_tsv/other/x.png", GREEN)
    refs = ["KIVA/a.png", "../../other/x.png", "memory:///custom_tsv/other/x.png", "/custom_tsv/other/x.png"]
    rows = [{"index": i, "question": "Q?", "A": "x", "B": "y", "answer": "A", "final_image_path_ori": f"['{r}']"}
            for i, r in enumerate(refs)]
    fs.pipe("/custom_tsv/bench/KIVA.tsv", tsv_text(rows).encode())
    items = load_benchmark_spec("KIVA", "memory:///custom_tsv/bench/KIVA.tsv")
    assert items[0].images == (RED,) and all("refused: it resolves outside" in it.image_error for it in items[1:])
    rooted = load_benchmark_spec("KIVA", "memory:///custom_tsv/bench/KIVA.tsv", images_root="memory:///custom_tsv/other")
    assert [it.images == (GREEN,) for it in rooted] == [False, False, True, True]
    fs.rm("/custom_tsv", recursive=True)
