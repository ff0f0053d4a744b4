"""A cluster of collections on Ray: one actor per shard, and the client that encodes queries,
scatters them to the shards and merges their top-k exactly.

Each shard is a :class:`~lsr.index.cluster.Shard` run as a named, detached Ray actor
(``lsr-<cluster id>-<shard>`` in the namespace ``lsr``): it opens its collection as the writer
(memory-mapped segments, its own write-ahead log), so every client of the cluster, ``lsr
serve --ray`` and ``lsr.connect`` alike, reaches the same actors. Ray restarts an actor that
dies (``max_restarts``); the new one reopens the collection and replays its log, so no
acknowledged write is lost. While a shard is down its calls answer
:class:`~lsr.index.errors.ShardsUnavailableError` (503 over REST) after at most ``timeout``
seconds, or a search with ``allow_partial`` merges the shards that answered.

The cluster directory must be readable and writable at the same path on every node that
runs a shard (one machine, or a shared filesystem).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import scipy.sparse as sp

from lsr.encoders import load_encoder
from lsr.errors import ConfigError, InputError
from lsr.index.cluster import Down, Shard, ShardedCollection, read_manifest, shard_name
from lsr.index.errors import ShardsUnavailableError
from lsr.index.results import SearchResults
from lsr.pipeline.indexing import ENCODER_DIR

logger = logging.getLogger(__name__)
NAMESPACE = "lsr"
DEFAULT_TIMEOUT = 10.0  # seconds a shard may take to answer before it counts as down


def ray_module():
    """``ray``, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            "Ray is not installed; install the extra: pip install 'lsr-engine[distributed]'."
        ) from e
    return ray


def init_ray(address: str | None):
    """Join the Ray cluster at ``address`` (``auto``: the one this machine belongs to; None:
    start a local one in this process) in the ``lsr`` namespace; returns ``ray``."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"Cannot join the Ray cluster at {address!r}: {e}") from e
    return ray


def actor_name(cluster_id: str, number: int) -> str:
    return f"lsr-{cluster_id}-{number}"


class RayShard(Shard):
    """A shard as a Ray actor: a :class:`~lsr.index.cluster.Shard` that can say which node
    of the cluster it runs on."""

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayShards:
    """The transport of :class:`~lsr.index.cluster.ShardedCollection` on Ray: each shard an
    actor, found by name or started (shard i on node i mod n), restarted there when it dies."""

    def __init__(
        self,
        root: str | Path,
        address: str | None = "auto",
        max_restarts: int = -1,
        num_cpus: float = 0,
        flush_threshold: int = 10_000,
    ) -> None:
        self.ray = init_ray(address)
        self.root = Path(root).resolve()
        manifest = read_manifest(self.root)
        remote = self.ray.remote(RayShard)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # shard i pinned to node i mod n (node id order), where Ray restarts it if it dies
        nodes = sorted(n["NodeID"] for n in self.ray.nodes() if n["Alive"])
        self.actors = [
            remote.options(
                name=actor_name(manifest.cluster_id, number),
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=max_restarts,
                max_task_retries=0,
                num_cpus=num_cpus,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    nodes[number % len(nodes)], soft=False
                ),
            ).remote(str(self.root), number, read_only=False, flush_threshold=flush_threshold)
            for number in range(manifest.n_shards)
        ]

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until every shard has opened its collection (a new actor loads its segments
        and compiles its kernels first); a shard that cannot open raises its error."""
        ray, errors = self.ray, self.ray.exceptions
        refs = [actor.ping.remote() for actor in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        late = [shard_name(n) for n, ref in enumerate(refs) if ref not in set(ready)]
        if late:
            raise ShardsUnavailableError(late, {0: f"not started within {timeout:g} s"})
        try:
            ray.get(refs)
        except errors.RayActorError as e:
            cause = getattr(e, "cause", None) or getattr(e, "error_msg", None) or e
            raise ConfigError(f"A shard of the cluster at {self.root} cannot open: {cause}") from e

    def call(self, calls: dict[int, tuple], timeout: float | None = None) -> dict[int, object]:
        """Send every ``{shard: (method, args, kwargs)}`` at once, then gather: a shard's own
        error is raised as it is; one that is dead, restarting or later than ``timeout``
        seconds gives :class:`~lsr.index.cluster.Down`."""
        ray, errors = self.ray, self.ray.exceptions
        refs = {
            number: getattr(self.actors[number], method).remote(*args, **kwargs)
            for number, (method, args, kwargs) in calls.items()
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        ready = set(ready)
        out: dict[int, object] = {}
        for number, ref in refs.items():
            if ref not in ready:
                ray.cancel(ref)
                out[number] = Down(f"{shard_name(number)}: no answer within {timeout:g} s")
                continue
            try:
                out[number] = ray.get(ref)
            except errors.RayTaskError as e:  # the shard's own error: bad input, full disk
                raise (e.cause if isinstance(e.cause, BaseException) else e) from None
            except (errors.RayActorError, errors.ActorUnavailableError) as e:
                out[number] = Down(f"{shard_name(number)}: {type(e).__name__}")
        return out

    def pids(self) -> list[int]:
        """The process of each shard's actor (the tests kill one)."""
        return [p["pid"] for p in self.ray.get([a.ping.remote() for a in self.actors])]

    def nodes(self) -> list[str]:
        """The Ray node each shard's actor runs on."""
        return self.ray.get([a.node.remote() for a in self.actors])

    def close(self) -> None:
        """Leave the actors running (other clients share them)."""

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every shard: each closes its collection (checkpointing its log), then its
        actor is killed for good."""
        ray = self.ray
        closing = [a.close.remote() for a in self.actors]
        ray.wait(closing, num_returns=len(closing), timeout=timeout)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


class Cluster:
    """A cluster on Ray as one collection, with the encoder its documents were encoded with:
    text (or vectors) in, ranked hits out; documents in, routed to their shards.

    ``collection`` is the :class:`~lsr.index.cluster.ShardedCollection` (what ``lsr serve
    --ray`` serves); ``transport`` its Ray actors."""

    def __init__(self, collection: ShardedCollection, encoder) -> None:
        collection.check_vocab(encoder.vocab)
        self.collection = collection
        self.encoder = encoder

    @property
    def transport(self) -> RayShards:
        return self.collection.transport

    @property
    def n_docs(self) -> int:
        return self.collection.n_docs

    def search(
        self,
        queries: str | Sequence[str] | sp.csr_array,
        k: int = 10,
        filter=None,
        fields: Sequence[str] | None = None,
        allow_partial: bool = False,
        **options,
    ) -> SearchResults:
        """Top-``k`` of every shard merged exactly (ids, scores and tie order as one index
        over all documents). ``queries``: a text, a list of texts (encoded here, once, and
        sent to each shard as one batch) or a CSR batch of query vectors. With
        ``allow_partial``, shards that are down are left out and named in ``.partial``."""
        if isinstance(queries, str):
            queries = [queries]
        if not sp.issparse(queries):
            texts = list(queries)
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise InputError("Give query texts (non-empty strings) or a CSR batch.")
            queries = self.encoder.encode_queries(texts)
        return self.collection.search(
            queries, k, filter=filter, fields=fields, allow_partial=allow_partial, **options
        )

    def add(self, documents: Sequence[dict]) -> int:
        """Add or replace documents (``{"_id", "title", "text", ...fields}``), encoded here and
        written to their shards; durable when this returns."""
        docs = list(documents)
        if not docs or not all(isinstance(d, dict) and "_id" in d for d in docs):
            raise InputError('Give documents as dicts with an "_id" (and title, text).')
        ids = [str(d["_id"]) for d in docs]
        texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in docs]
        records = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        return self.collection.upsert(self.encoder.encode_documents(texts), ids, records)

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents; the ids that existed."""
        return self.collection.delete(doc_ids)[1]

    def document(self, doc_id: str, fields: Sequence[str] | None = None) -> dict | None:
        return self.collection.document(doc_id, fields)

    def stats(self) -> dict:
        return self.collection.stats()

    def close(self) -> None:
        """Disconnect; the shards keep running for other clients."""
        self.collection.close()

    def shutdown(self) -> None:
        """Stop the cluster's shard actors (their collections closed cleanly)."""
        self.transport.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cluster(
    root: str | Path,
    address: str | None = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    max_restarts: int = -1,
    flush_threshold: int = 10_000,
) -> ShardedCollection:
    """The cluster at ``root`` served by Ray actors (started if not yet running)."""
    shards = RayShards(root, address, max_restarts=max_restarts, flush_threshold=flush_threshold)
    shards.wait_ready()
    collection = ShardedCollection(root, shards)
    collection.timeout = timeout
    return collection


def running_cluster(address: str | None) -> Path:
    """The directory of the one cluster whose shards run on the Ray cluster at ``address``
    (started by ``lsr serve --ray`` or another client)."""
    ray = init_ray(address)
    ids = sorted({n.split("-")[1] for n in ray.util.list_named_actors() if n.startswith("lsr-")})
    if len(ids) != 1:
        running = f"{len(ids)} clusters run there" if ids else "no cluster runs there"
        raise InputError(
            f"{running}; name the cluster directory: lsr.connect(address, cluster=DIR)."
        )
    actor = ray.get_actor(actor_name(ids[0], 0), namespace=NAMESPACE)
    return Path(ray.get(actor.ping.remote(), timeout=DEFAULT_TIMEOUT)["root"])


def connect(
    address: str | None = "auto",
    cluster: str | Path | None = None,
    encoder=None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Cluster:
    """``lsr.connect(address, cluster=DIR)``: the cluster of collections at ``DIR`` (built by
    ``lsr index --shards``) on the Ray cluster at ``address``, its shards started as actors
    unless running already (``lsr serve --ray`` shares them); without ``cluster``, the one
    cluster whose shards run there. ``encoder``: for queries and new documents (default:
    the one the shards were built with)."""
    root = Path(cluster) if cluster is not None else running_cluster(address)
    manifest = read_manifest(root)
    if encoder is None or isinstance(encoder, (str, Path)):
        encoder = load_encoder(encoder or manifest.shard_path(root, 0) / ENCODER_DIR)
    return Cluster(open_cluster(root, address, timeout), encoder)
