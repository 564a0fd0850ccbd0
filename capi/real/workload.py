"""A real Python workload for capi/real/run.

Run once under glibc's malloc and once with a malloc library preloaded: the two outputs must be
byte-identical. Everything printed is deterministic (no addresses, ids, timings or hash-order
dependence): each section prints a few summary values and a SHA-256 of what it computed, and the
last line is the digest of all sections.

Sections: JSON round trips of nested documents, an in-memory SQLite database (inserts, an index,
joins, aggregates), worker threads each building and reducing their own objects, a few thousand
objects in dicts/lists/sets with cyclic garbage and gc.collect(), regular expressions, and
pickle round trips (protocols 0 to 5). The run takes a few seconds.
"""

import gc
import hashlib
import json
import pickle
import random
import re
import sqlite3
import sys
import threading

TOTAL = hashlib.sha256()


def report(name, summary, data):
    """Prints one section's summary and the SHA-256 of `data` (bytes), and folds both into TOTAL."""
    digest = hashlib.sha256(data).hexdigest()
    line = f"{name}: {summary} sha256={digest}"
    print(line)
    TOTAL.update(line.encode())


def make_doc(rng, depth):
    """A nested JSON-like document of dicts, lists, strings, ints, floats, bools and None."""
    kind = rng.randrange(7) if depth > 0 else rng.randrange(2, 7)
    if kind == 0:
        return {f"k{rng.randrange(10_000)}_{i}": make_doc(rng, depth - 1) for i in range(rng.randrange(1, 6))}
    if kind == 1:
        return [make_doc(rng, depth - 1) for _ in range(rng.randrange(0, 6))]
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 3:
        return rng.randrange(-(10**12), 10**12)
    if kind == 4:
        return rng.randrange(-(10**6), 10**6) / 64.0
    if kind == 5:
        return rng.random() < 0.5
    return None


def section_json():
    rng = random.Random(1)
    out = bytearray()
    total_len = 0
    for i in range(400):
        doc = make_doc(rng, 5)
        text = json.dumps(doc, sort_keys=True, ensure_ascii=(i % 2 == 0))
        back = json.loads(text)
        assert back == doc, "json round trip changed a document"
        again = json.dumps(back, sort_keys=True, ensure_ascii=(i % 2 == 0))
        assert again == text, "json dumps is not stable"
        pretty = json.dumps(back, sort_keys=True, indent=2)
        assert json.loads(pretty) == doc
        total_len += len(text)
        out += text.encode("utf-8", "surrogatepass")
    report("json", f"documents=400 chars={total_len}", bytes(out))


def section_sqlite():
    db = sqlite3.connect(":memory:")
    cur = db.cursor()
    cur.execute("create table customer(id integer primary key, name text, city text)")
    cur.execute("create table orders(id integer primary key, customer integer, item text, qty integer, price real)")
    rng = random.Random(2)
    cities = ["Oslo", "Lima", "Pune", "Kyiv", "Quito", "Accra", "Perth", "Bern"]
    cur.executemany(
        "insert into customer values (?, ?, ?)",
        [(i, f"customer-{i:05d}", cities[rng.randrange(len(cities))]) for i in range(3000)],
    )
    cur.executemany(
        "insert into orders(customer, item, qty, price) values (?, ?, ?, ?)",
        [
            (rng.randrange(3000), f"item-{rng.randrange(500):03d}" * rng.randrange(1, 4), rng.randrange(1, 20), rng.randrange(100, 100_000) / 100)
            for _ in range(20_000)
        ],
    )
    cur.execute("create index orders_customer on orders(customer)")
    cur.execute("create index customer_city on customer(city, name)")
    db.commit()
    rows = cur.execute(
        """select c.city, count(distinct c.id), count(o.id), sum(o.qty), round(sum(o.qty * o.price), 2)
           from customer c join orders o on o.customer = c.id
           group by c.city order by c.city"""
    ).fetchall()
    top = cur.execute(
        """select c.name, sum(o.qty) as q from customer c join orders o on o.customer = c.id
           group by c.id order by q desc, c.name limit 5"""
    ).fetchall()
    cur.execute("delete from orders where qty % 3 = 0")
    cur.execute("update customer set name = upper(name) where id % 7 = 0")
    left = cur.execute("select count(*), sum(length(item)) from orders").fetchone()
    check = cur.execute("pragma integrity_check").fetchone()[0]
    dump = "\n".join(db.iterdump())
    db.close()
    data = repr((rows, top, left, check)).encode() + dump.encode()
    report("sqlite", f"cities={len(rows)} top={top[0][0]} left={left[0]} integrity={check}", data)


def worker(index, results):
    """Each thread builds its own objects and reduces them to a value that depends only on index."""
    rng = random.Random(100 + index)
    table = {}
    chunks = []
    for step in range(4000):
        key = f"t{index}-{rng.randrange(2000)}"
        table.setdefault(key, []).append(step)
        if step % 5 == 0:
            chunks.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        if len(chunks) > 50:
            del chunks[: rng.randrange(1, 40)]
    h = hashlib.sha256()
    for key in sorted(table):
        h.update(key.encode())
        h.update(repr(table[key]).encode())
    for chunk in chunks:
        h.update(chunk)
    results[index] = (len(table), h.hexdigest())


def section_threads():
    results = [None] * 8
    threads = [threading.Thread(target=worker, args=(i, results)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = sum(r[0] for r in results)
    report("threads", f"threads=8 keys={keys}", repr(results).encode())


class Node:
    """A graph node: the graph has cycles, so only the cycle collector frees it."""

    def __init__(self, value):
        self.value = value
        self.edges = []
        self.meta = {"value": value, "tag": f"n{value}"}


def section_objects_gc():
    gc.collect()
    rng = random.Random(3)
    survivors = []
    freed = 0
    for round_ in range(10):
        nodes = [Node(round_ * 1000 + i) for i in range(1000)]
        for node in nodes:
            for _ in range(3):
                node.edges.append(nodes[rng.randrange(len(nodes))])
        # Keep copies, not the nodes: each round's graph becomes cyclic garbage.
        survivors.extend(Node(n.value) for n in nodes[::97])
        del nodes
        freed += gc.collect()
    d = {}
    for i in range(5000):
        d[(i, str(i))] = {i, i * 2, i * 3}
    for i in range(0, 5000, 3):
        del d[(i, str(i))]
    s = frozenset(x for v in d.values() for x in v)
    summary = sorted(n.value for n in survivors)
    data = repr((summary, len(d), len(s), sum(s))).encode()
    report("objects+gc", f"survivors={len(survivors)} dict={len(d)} set={len(s)} freed={freed}", data)


def section_re():
    rng = random.Random(4)
    words = ["alpha", "beta", "gamma", "delta", "x86_64", "riscv64", "2024-01-05", "12:30:59", "a@b.org"]
    text = " ".join(words[rng.randrange(len(words))] + str(rng.randrange(100)) for _ in range(20_000))
    patterns = [
        r"\b[a-z]+\d+\b",
        r"(\d{4})-(\d{2})-(\d{2})\d*",
        r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)",
        r"[\w.]+@[\w.]+\.org\d*",
        r"(?i)(?:ALPHA|GAMMA)(\d+)",
        r"riscv(\d+)|x86_(\d+)",
    ]
    out = []
    for p in patterns:
        rx = re.compile(p)
        found = rx.findall(text)
        out.append((p, len(found), found[:5], found[-5:]))
    replaced = re.sub(r"(\w+?)(\d+)", lambda m: m.group(2) + m.group(1), text[:20_000])
    split = re.split(r"[\s@:.-]+", text[:50_000])
    out.append((len(replaced), hashlib.sha256(replaced.encode()).hexdigest(), len(split)))
    report("re", f"patterns={len(patterns)} matches={sum(o[1] for o in out[:-1])}", repr(out).encode())


def section_pickle():
    rng = random.Random(5)
    value = {
        "docs": [make_doc(rng, 4) for _ in range(200)],
        "tuples": [(i, str(i), float(i) / 3, b"x" * (i % 50)) for i in range(3000)],
        "sets": [frozenset(range(i % 40)) for i in range(500)],
        "big": bytes(range(256)) * 400,
        "ints": [1 << i for i in range(300)],
    }
    lens = []
    h = hashlib.sha256()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps(value, protocol=protocol)
        back = pickle.loads(blob)
        assert back == value, f"pickle protocol {protocol} round trip changed the value"
        lens.append(len(blob))
        h.update(blob)
    report("pickle", f"protocols={len(lens)} sizes={lens}", h.digest())


def main():
    print(f"python {sys.version_info.major}.{sys.version_info.minor}")
    section_json()
    section_sqlite()
    section_threads()
    section_objects_gc()
    section_re()
    section_pickle()
    print(f"digest: {TOTAL.hexdigest()}")


if __name__ == "__main__":
    main()
