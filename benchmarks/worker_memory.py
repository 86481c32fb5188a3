"""What each serving worker costs in memory at 10^6 repositories: RSS and PSS (smaps_rollup) of
processes that load a model and its index through `serving.model.loaded.load_model` (the worker's
load path, without HTTP) and answer 100 approximate requests, with the shared local copies
(`mapped`: BATCHREC_SERVE_CACHE, what `batchrec serve` does) or reading them into memory
(`memory`: the path without local copies). Untrained weights cost what trained ones cost.

    python benchmarks/worker_memory.py make /tmp/wm             # artifact + index in a local store
    python benchmarks/worker_memory.py run mapped 2 /tmp/wm     # 2 workers, one after the other
"""

import json
import os
import subprocess
import sys
import time

ROOT = sys.argv[-1] if len(sys.argv) > 2 else "/tmp/worker_memory"
STORE = ROOT + "/store"
def make():
    import faiss
    import numpy as np

    from batchrec_dagster.storage.blobs import LocalBlobStore
    from recvae import Recommender, RecVAE, RecVAEConfig, ann, dump_artifact

    faiss.omp_set_num_threads(2)
    n = 1_000_000
    rec = Recommender(RecVAE(n, RecVAEConfig()), np.arange(n, dtype=np.int64), np.ones(n, np.float32))
    store = LocalBlobStore(STORE)
    art = store.put_new('m1m.safetensors', dump_artifact(rec, config=RecVAEConfig(), metrics={}))
    built = ann.build_for_model(rec.model, ann.IndexParams())
    idx = store.put_new('m1m.safetensors.faiss', built.data)
    entry = {'_id': 'm1m', 'file_name': art.name, 'size_bytes': art.size_bytes, 'sha256': art.sha256,
             'ann_index': {**built.to_dict(), 'file_name': idx.name, 'size_bytes': idx.size_bytes,
                           'sha256': idx.sha256, 'artifact_sha256': art.sha256}}
    json.dump(entry, open(ROOT + '/entry.json', 'w'))
    print('made', built.to_dict(), flush=True)
def worker(mode, seconds):
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from batchrec_dagster.serving.model.ann_index import AnnOptions
    from batchrec_dagster.serving.model.loaded import load_model
    from batchrec_dagster.serving.model.local_copies import LocalCopies
    from batchrec_dagster.storage.blobs import LocalBlobStore
    entry = json.load(open(ROOT + '/entry.json'))
    copies = LocalCopies(ROOT + '/cache') if mode == 'mapped' else None
    started = time.perf_counter()
    model = load_model(entry, LocalBlobStore(STORE), None, ann=AnnOptions(min_items=50_000), copies=copies)
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(os.getpid())
    for _ in range(100):  # requests of 50 random repositories each
        model.scorer.recommend([rng.choice(model.n_items, 50, replace=False)], 20)
    import gc

    gc.collect()
    print(json.dumps({'ready': True, 'load_s': round(load_s, 1), 'top_k': model.ann}), flush=True)
    time.sleep(seconds)
def rollup(pid):
    out = {}
    for line in open(f'/proc/{pid}/smaps_rollup'):
        parts = line.split()
        if parts[0] in ('Rss:', 'Pss:', 'Pss_Anon:', 'Pss_File:', 'Anonymous:'):
            out[parts[0][:-1]] = round(int(parts[1]) / 1024)
    return out
if sys.argv[1] == 'make':
    make()
elif sys.argv[1] == 'worker':
    worker(sys.argv[2], float(sys.argv[3]))
else:
    mode, n = sys.argv[2], int(sys.argv[3])
    procs = []
    for _ in range(n):  # one after the other, as a supervisor's workers come up
        procs.append(subprocess.Popen([sys.executable, __file__, 'worker', mode, '600', ROOT],
                                     stdout=subprocess.PIPE, text=True))
        info = json.loads(procs[-1].stdout.readline())
    print(json.dumps({'mode': mode, 'workers': n, 'MiB': [rollup(p.pid) for p in procs],
                      'last_load': info, 'loadavg': os.getloadavg()}), flush=True)
    for p in procs:  # the workers this run started, by their handles
        p.kill()
        p.wait()
