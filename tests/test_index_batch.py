"""``Indexer.index_batch``: several waiting articles with two embedding calls in all, the same
decisions as one at a time, and one article's failure kept to itself.

Real components: SQLite state store (in memory), the embedded Qdrant store, the nine fixture
articles in four languages (a near-duplicate pair and a story told in four languages among
them), embedded by the hash embedder, which counts its calls here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from indexer.embed import HashEmbedder
from indexer.index import Indexer, IndexReport
from indexer.qdrant_edge import EdgeVectorStore
from indexer.stories import StoryPolicy
from indexer.types import Matrix
from monitor.state import StateStore, open_state_store
from monitor.types import Article, ArticleDraft, ArticleStatus, ProcessedText, TextSource
from tests.support.newsfixtures import fixture_articles

NOW = datetime(2026, 2, 10, 12, tzinfo=UTC)
POISON = "\u2620 this text makes the embedder fail"


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting its calls; a text with POISON makes counting tokens fail."""

    def __init__(self) -> None:
        super().__init__(dim=256)
        self.calls: list[int] = []
        self.fail_documents = False

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        if self.fail_documents:
            raise RuntimeError("the embedding engine went away")
        self.calls.append(len(texts))
        return super().embed_documents(texts)

    def count_tokens(self, text: str) -> int:
        if POISON in text:
            raise ValueError("cannot tokenize this text")
        return super().count_tokens(text)


def _articles(store: StateStore, extra: Sequence[tuple[str, str]] = ()) -> list[Article]:
    """The fixture articles (and ``extra`` (title, text) ones), fetched, one minute apart."""
    items = [(a.title, "\n\n".join(a.paragraphs), a.language) for a in fixture_articles()]
    items += [(title, text, "en") for title, text in extra]
    store.sync_feeds([("wire", "https://wire.example/rss", "en")], NOW)
    ids = []
    for n, (title, text, language) in enumerate(items):
        published = NOW + timedelta(minutes=n)
        url = f"https://wire.example/{n}"
        article_id = f"a{n}"
        draft = ArticleDraft(
            id=article_id, feed="wire", entry_key=url, url=url, canonical_url=url, guid=url,
            title=title, feed_text="", feed_language=language, published_at=published,
            author=None, content_hash=article_id,
        )  # fmt: skip
        store.save_drafts([draft], published)
        store.save_text(article_id, ProcessedText(text, TextSource.PAGE, language, 1.0), published)
        ids.append(article_id)
    articles = [store.get_article(i) for i in ids]
    assert all(a is not None and a.status is ArticleStatus.FETCHED for a in articles)
    return [a for a in articles if a is not None]


@pytest.fixture
def make_indexer(tmp_path: Path) -> Iterator[object]:
    opened: list[tuple[StateStore, EdgeVectorStore]] = []

    def make(name: str, embedder: HashEmbedder) -> Indexer:
        store = open_state_store("sqlite://")
        vectors = EdgeVectorStore(tmp_path / name)
        opened.append((store, vectors))
        return Indexer(store=store, vectors=vectors, embedder=embedder, collection="test",
                       policy=StoryPolicy(), clock=lambda: NOW + timedelta(hours=1))  # fmt: skip

    yield make
    for store, vectors in opened:
        vectors.close()
        store.close()


def _outcome(indexer: Indexer) -> dict[str, tuple[object, ...]]:
    """Per article: status, story (by its first article), near-duplicate, stored passages."""
    articles = {a.id: a for a in indexer.store.list_articles()}
    first_of = {}
    for a in sorted(articles.values(), key=lambda a: a.id):
        first_of.setdefault(a.story_id, a.id)
    return {
        a.id: (
            a.status,
            first_of[a.story_id] if a.story_id else None,
            a.near_duplicate_of,
            a.body_pending,
            sorted(p.passage_index for p, _ in indexer.vectors.article_points("test", a.id)),
        )
        for a in articles.values()
    }


def test_a_batch_decides_as_one_article_at_a_time_with_two_embedding_calls(
    make_indexer: object,
) -> None:
    first = fixture_articles()[0]
    syndicated = [(first.title, "\n\n".join(first.paragraphs))]  # an exact copy, same batch
    one_by_one = make_indexer("single", CountingEmbedder())  # type: ignore[operator]
    for article in _articles(one_by_one.store, syndicated):
        one_by_one.index_article(article)
    embedder = CountingEmbedder()
    batched = make_indexer("batch", embedder)  # type: ignore[operator]

    results = batched.index_batch(_articles(batched.store, syndicated))

    assert all(isinstance(r, IndexReport) and not r.body_pending for r in results)
    assert _outcome(batched) == _outcome(one_by_one)
    # every lead but the copy's, then every body still needed
    assert embedder.calls == [len(results) - 1, embedder.calls[1]]
    assert results[-1].outcome == "copy"  # type: ignore[union-attr]


def test_a_copy_of_a_stored_article_is_not_embedded_in_a_batch(make_indexer: object) -> None:
    embedder = CountingEmbedder()
    indexer = make_indexer("copies", embedder)  # type: ignore[operator]
    first = fixture_articles()[0]
    articles = _articles(indexer.store, [(first.title, "\n\n".join(first.paragraphs))])
    indexer.index_article(articles[0])
    embedder.calls.clear()

    results = indexer.index_batch(articles[1:])

    assert results[-1].outcome == "copy"  # type: ignore[union-attr]
    assert embedder.calls[0] == len(articles) - 2  # the leads, but for the copy's


def test_a_deferred_batch_stores_leads_and_leaves_the_bodies_pending(make_indexer: object) -> None:
    embedder = CountingEmbedder()
    indexer = make_indexer("deferred", embedder)  # type: ignore[operator]

    results = indexer.index_batch(_articles(indexer.store), defer_body=True)

    assert len(embedder.calls) == 1
    pending = [r.article_id for r in results if isinstance(r, IndexReport) and r.body_pending]
    assert pending
    assert set(indexer.store.bodies_pending(embedder.model_id, 100)) == set(pending)
    for article_id in pending:
        assert [p.passage_index for p, _ in indexer.vectors.article_points("test", article_id)] == [
            0
        ]


def test_a_deferred_body_is_embedded_from_the_split_its_lead_was_cut_from(
    make_indexer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.index as index_module

    splits: list[str] = []
    real_split = index_module.split_passages

    def counting_split(title: str, text: str, **kwargs: object) -> object:
        splits.append(title)
        return real_split(title, text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(index_module, "split_passages", counting_split)
    embedder = CountingEmbedder()
    indexer = make_indexer("split-once", embedder)  # type: ignore[operator]
    articles = _articles(indexer.store)
    indexer.index_batch(articles, defer_body=True)
    assert len(splits) == len(articles)

    pending = [
        indexer.store.get_article(i) for i in indexer.store.bodies_pending(embedder.model_id, 100)
    ]
    reports = indexer.index_bodies([a for a in pending if a is not None])

    assert len(splits) == len(articles)  # not split again
    assert all(r is not None and r.embedded > 0 for r in reports)
    for article in pending:
        assert article is not None
        indexes = [p.passage_index for p, _ in indexer.vectors.article_points("test", article.id)]
        assert indexes == list(range(len(indexes)))
        assert len(indexes) > 1

    # a new version of the text is split anew
    changed = replace(articles[0], text=articles[0].text + "\nA new paragraph.", text_hash="new")
    indexer._split(changed)
    assert len(splits) == len(articles) + 1


def test_one_failing_article_leaves_the_others_indexed(make_indexer: object) -> None:
    indexer = make_indexer("poison", CountingEmbedder())  # type: ignore[operator]
    articles = _articles(indexer.store, extra=[("Poisoned", f"First paragraph.\n\n{POISON}")])

    results = indexer.index_batch(articles)

    failed = [a.id for a, r in zip(articles, results, strict=True) if isinstance(r, Exception)]
    assert failed == [articles[-1].id]
    assert isinstance(results[-1], ValueError)
    states = {a.id: a.status for a in indexer.store.list_articles()}
    assert states.pop(failed[0]) is ArticleStatus.FETCHED  # the next sweep retries it
    assert set(states.values()) == {ArticleStatus.INDEXED}


def test_bodies_that_fail_to_embed_stay_pending_for_the_sweep(make_indexer: object) -> None:
    embedder = CountingEmbedder()
    indexer = make_indexer("bodies", embedder)  # type: ignore[operator]
    articles = _articles(indexer.store)
    original = embedder.embed_documents
    calls = 0

    def leads_only(texts: Sequence[str]) -> Matrix:
        nonlocal calls
        calls += 1
        if calls > 1:  # the bodies' call
            raise RuntimeError("the embedding engine went away")
        return original(texts)

    embedder.embed_documents = leads_only  # type: ignore[method-assign]
    results = indexer.index_batch(articles)

    assert all(isinstance(r, IndexReport) for r in results)
    pending = {r.article_id for r in results if isinstance(r, IndexReport) and r.body_pending}
    assert pending
    assert set(indexer.store.bodies_pending(embedder.model_id, 100)) == pending
    embedder.embed_documents = original  # type: ignore[method-assign]
    fresh = [indexer.store.get_article(a) for a in sorted(pending)]
    reports = indexer.index_bodies([a for a in fresh if a is not None])
    assert all(r is not None and r.embedded > 0 for r in reports)
    assert indexer.store.bodies_pending(embedder.model_id, 100) == []
