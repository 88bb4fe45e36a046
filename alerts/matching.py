"""Does an article match a topic, and why (pure: vectors in, an explained ``Match`` out).

A topic is turned into a ``TopicProfile`` once (``alerts.profiles`` embeds its texts); each newly
indexed article is then scored against every profile from its passage vectors, which the
indexer has already computed, so matching costs a few small matrix products per article.

The score of one passage ``p`` (all vectors L2-normalised, so a dot product is a cosine):

    s(p) = max_q [cos(q_lang, p) - cos(q_lang, m_lang(p))] - contrast * cos(c, p)  + examples

* ``q`` runs over the topic's query vectors: its description, moved towards the stored
  passages that fit it best (pseudo-relevance feedback, ``refine_query``; 1.5 x the mean of
  the 20 best for the bundled model: ``BUNDLED_POLICY``). A description is
  written in the abstract; the coverage it should find is concrete (names, places, numbers),
  and a few of the best stored passages carry that vocabulary - in every language;
  then refined once more per language on that language's best passages (10, weight 1), so
  each language is scored with a query drawn towards its own vocabulary - the residual
  advantage of the description's own language shrinks; and towards the passages of that
  language nearest to the 20 best passages of the other languages (weight 1): those best
  passages are mostly in the description's language, and their nearest neighbours elsewhere
  are the same facts reported in other words (calibration F1 0.932 -> 0.958);
* ``m_lang(p)`` is the mean direction of stored passages in ``p``'s language: the model rates
  text in the query's own language higher whatever it says (the same bias ``newsmon search``
  removes), so each language gets its own offset and one threshold serves all languages;
* ``c`` is the *context*: the mean direction of all coverage. Subtracting part of the
  similarity to it keeps what is specific to the topic rather than to the broad subject that
  hard negatives share (a small gain on the calibration split, weight 0.25);
* ``examples`` pull towards (``negatives`` and ``not relevant`` labels push away from) texts the
  user gave; they only count when there are some.

The article's score is the mean of its best ``agreeing`` passages' scores (two by default: one
passage that happens to mention the subject is weaker evidence than two that are about it). It
matches when the score reaches the topic's threshold (or the calibrated default), an
``include`` keyword occurs (when the topic lists any) and no ``exclude`` keyword does.

The stored passages that refine a topic's queries are screened (``screen_feedback``): only
those its unrefined queries score near its threshold, and none that a competing topic fits
better. A service matches each article as it arrives, so its feedback draws on the coverage
stored so far: early on, a topic's best stored passages are mostly unrelated news and its
neighbours' coverage, and unscreened feedback drew its query towards them (measured in
``bench/topics_live.py``; a benchmark that stores a whole split before matching does not see
it, since its feedback draws on the split's future articles too). And a topic's coverage can
start long after the store filled with other news: then even its screened best passages are
other news that happens to sit near its threshold (a bankruptcy guide, an alimony guide and a
NATO explainer for the guarantees), and refinement on them drew the queries away from the
topic's first articles (recall 0 for the guarantees in ``bench/topics_live.py --split
calibration_multiday.jsonl --order burst``). So feedback moves a topic's queries in proportion
to the stored articles its unrefined queries match with confidence (``feedback_support``):
not at all before its coverage starts, fully from ``confident_articles`` of them on.

Then the topics compete for the article's passages (``match_topics``): where other topics
match the article, each passage one of them fits better loses ``rival_contrast`` times the gap.
A desk's topics are neighbours, and this model rates a report on the territory discussed at a
round of talks close to the talks' description and a withdrawal plan's ceasefire clause close
to the guarantees' (see the README's topic matching benchmark). Except where the article names
what only one topic's name names (``alerts.names``: "Abu Dhabi" of "Abu Dhabi peace talks", in
any script): that topic keeps its claim, and decides as if scored alone - a report of the
talks whose news is the territory argued there is the talks' too.

Last, an article's story may carry it (``story_supported``): a near miss - at most
``story_margin`` below the threshold by its score alone - matches when another article of its
story (the indexer's cluster: the same event from another outlet or language) matched the topic
``story_support`` above it. This model's misses come by event: one event's coverage just below
the threshold, in words the description does not use, while another outlet's report of it
clears it. The stage applies it in either order of arrival (``alerts.stage``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from alerts.keywords import found
from alerts.names import distinctive_names_among, name_as_written, names_in, text_keys
from alerts.types import Match, Topic
from indexer.models import BUNDLED, EMBEDDINGGEMMA, model_family
from indexer.types import Matrix, Vector

#: E5 similarities between unrelated news passages sit around 0.75-0.8 (its cosines are
#: compressed into the upper range): only similarity above that says "like this example"
EXAMPLE_BASELINE = 0.8


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """Scoring weights and the default threshold, calibrated for a model on the topic fixtures
    (``bench/topics.py``, ``--model`` for a sentence-transformers one; ``policy_for`` picks a
    model's policy; never tuned per topic by hand)."""

    threshold: float
    contrast: float = 0.25
    #: the article score is the mean of this many best passage scores
    agreeing: int = 2
    #: pseudo-relevance feedback: the query plus ``feedback_weight`` x the mean of the
    #: ``feedback_passages`` best stored passages (0: off)
    feedback_passages: int = 20
    feedback_weight: float = 1.0
    #: then once more per language, on that language's best passages only (0: off)
    language_feedback_passages: int = 10
    language_feedback_weight: float = 0.5
    #: and towards that language's nearest passages to the best passages of the *other*
    #: languages (0: off): coverage of the same facts, in this language's words
    anchor_passages: int = 20
    anchor_weight: float = 0.5
    #: weight of the similarity to the nearest example / relevant label
    example_weight: float = 0.5
    #: weight of the similarity to the nearest negative / not-relevant label
    negative_weight: float = 0.5
    #: only similarity to an example above this counts (the model's similarity of unrelated
    #: news passages: ``EXAMPLE_BASELINE`` for the bundled model)
    example_baseline: float = EXAMPLE_BASELINE
    #: topics compete: where other topics match an article, each passage one of them fits
    #: better loses this share of the gap (``match_topics``; 0: off)
    rival_contrast: float = 0.0
    #: topics compete for feedback too: a stored passage another competing topic's queries fit
    #: better does not refine this topic's queries (``owned_rows``)
    feedback_competition: bool = False
    #: only stored passages whose score under the unrefined queries is at most this far below
    #: the topic's threshold refine its queries (None: any): in a young store, a topic's best
    #: passages are mostly unrelated news, and feedback on them draws the query towards it
    feedback_margin: float | None = None
    #: feedback moves a topic's queries fully only once the store holds ``confident_articles``
    #: articles that its unrefined queries score at least ``confident_margin`` above its
    #: threshold (a passage of them), in proportion before (None: always fully). A topic's
    #: coverage can start long after the store filled with other news: screened or not, its
    #: best stored passages are then other news, and feedback on them drew the queries away
    #: from the topic's first articles (``feedback_support``)
    confident_margin: float | None = None
    confident_articles: int = 5
    #: the default threshold while the topic queries are not refined on stored coverage yet (a
    #: young store, see ``alerts.stage``): unrefined queries score unrelated news higher
    #: (None: ``threshold``)
    cold_threshold: float | None = None
    #: a story lends its clear match support: an article scoring at most ``story_margin`` below
    #: the threshold matches when another article of its story (the indexer's cluster: the same
    #: event, any outlet or language) scores at least ``story_support`` above it (0: off). The
    #: misses of this model come by story - one event's coverage all just below the threshold,
    #: told in words the description does not use - and so does the evidence: an outlet's
    #: report of the same event that clearly matches (``story_supported``)
    story_margin: float = 0.0
    story_support: float = 0.01
    #: a name in a topic's name that no other topic names (``alerts.names``: "Abu Dhabi" in
    #: "Abu Dhabi peace talks") keeps the topic's claim on an article that names it, in any
    #: script: no rival takes its passages (``match_topics``). Not in score units, so every
    #: model's policy has it on; measured with the bundled model
    named_claims: bool = False

    def before_feedback(self) -> MatchPolicy:
        """The policy a young store's unrefined queries are matched with."""
        if self.cold_threshold is None:
            return self
        return replace(self, threshold=self.cold_threshold)


#: calibrated with the bundled model on the calibration pool (tests/fixtures/topics:
#: calibration.jsonl, report_a.jsonl, report_b.jsonl; bench/topics.py: the threshold with the
#: best mean F1 there; the rival contrast by the pipelines on the calibration files, with
#: report_c.jsonl and report_d.jsonl as development data; report_e.jsonl reported; the feedback
#: screening by bench/topics_live.py, a fresh service matching the pool as it arrives among
#: ordinary news, where it raised the mean F1 from 0.912 to 0.949; the confident-coverage
#: support there too, on the multi-day file, where a topic's coverage starts late; the feedback
#: weights re-chosen on the pool once feedback was screened: the scoring table's grid, the
#: pipelines on the calibration files and the live benchmark on the pool; the story support
#: at the centre of the pool's plateau, on the stored scores with the indexer's stories, then
#: checked in the pipelines and live, with report_c/report_d/report_f as development data and
#: report_g, written blind, reporting; the names' claims on the pool's scoring table and
#: pipelines, with the same development files). Scores are
#: language-corrected cosines minus a quarter of the similarity to all coverage, so the
#: threshold sits below 0, not near 0.8 as for a plain cosine.
BUNDLED_POLICY = MatchPolicy(
    threshold=-0.180,
    contrast=0.25,
    feedback_weight=1.5,
    language_feedback_weight=1.0,
    anchor_weight=1.0,
    rival_contrast=0.5,
    feedback_margin=0.02,
    feedback_competition=True,
    confident_margin=0.02,
    confident_articles=10,
    story_margin=0.006,
    story_support=0.01,
    named_claims=True,
)
#: EmbeddingGemma-300M through the sentence-transformers backend (``indexer.models``): the
#: bundled model's scoring and weights; its threshold calibrated the same way (the best mean F1
#: on the calibration pool, ``bench/topics.py --model``); its example baseline the best of
#: 0.3-0.7 there (its unrelated news passages sit near 0.3-0.4, one event's reports near 0.7);
#: no story support (its margins were chosen in the bundled model's score units)
EMBEDDINGGEMMA_POLICY = replace(
    BUNDLED_POLICY, threshold=0.062, example_baseline=0.5, story_margin=0.0
)
#: for other models nothing was calibrated: the same scoring, a threshold that asks for a
#: clearer margin (check with ``newsmon topics test`` and set ``threshold`` per topic), and no
#: story support (its margins are in the bundled model's score units); the topics compete, and
#: names keep their topic's claim, as for the calibrated models
GENERIC_POLICY = MatchPolicy(
    threshold=0.06, rival_contrast=0.5, feedback_competition=True, named_claims=True
)


def policy_for(model_id: str) -> MatchPolicy:
    """The policy calibrated for this vector space's model, else ``GENERIC_POLICY``."""
    family = model_family(model_id)
    if family == BUNDLED:
        return BUNDLED_POLICY
    return EMBEDDINGGEMMA_POLICY if family == EMBEDDINGGEMMA else GENERIC_POLICY


def _empty() -> Matrix:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class TopicProfile:
    topic: Topic
    queries: Matrix  # (k, dim): the description and each aspect it lists, embedded as queries
    #: what each query stands for ("the description", or the aspect), for a match's reason
    query_labels: tuple[str, ...] = ()
    #: language -> (k, dim): the queries refined on that language's coverage
    language_queries: Mapping[str, Matrix] = field(default_factory=dict)
    #: language -> (k,) offsets cos(q_lang, m_lang); languages without one get their mean
    offsets: Mapping[str, Vector] = field(default_factory=dict)
    context: Vector | None = None  # (dim,)
    positives: Matrix = field(default_factory=_empty)  # examples, relevant labels (documents)
    negatives: Matrix = field(default_factory=_empty)  # negatives, not-relevant labels


@dataclass(frozen=True, slots=True)
class ArticleView:
    """What matching reads of an article."""

    id: str
    title: str
    text: str
    language: str
    source: str


@dataclass(frozen=True, slots=True)
class Rival:
    """The other topics that match an article, as one topic's verdict on it sees them."""

    topic_id: str  # the one of them with the best article score (a reason names it)
    passage_scores: Matrix  # per passage, the best score any of them gives it


def match_article(
    profile: TopicProfile,
    article: ArticleView,
    passages: Sequence[tuple[int, str]],
    vectors: Matrix,
    policy: MatchPolicy,
    rival: Rival | None = None,
    scores: Matrix | None = None,
) -> Match:
    """Score one article (its passages ``(index, text)`` and their vectors) against a topic,
    against the ``rival`` topics' passage scores when other topics match it (``match_topics``);
    ``scores``: the passages' scores for this topic when already computed."""
    topic = profile.topic
    threshold = topic.threshold if topic.threshold is not None else policy.threshold
    scope = _out_of_scope(topic, article)
    if scope or not passages:
        return Match(topic.id, article.id, False, 0.0, threshold, "", -1,
                     reason=scope or "no passages", ruled_out=True)  # fmt: skip
    if scores is None:
        scores = passage_scores(profile, vectors, policy, article.language)
    alone = article_score(scores, policy.agreeing)
    claimed = ""
    if rival is not None:
        scores = against_rival(scores, rival.passage_scores, policy.rival_contrast)
        if article_score(scores, policy.agreeing) < alone:
            claimed = f"{rival.topic_id} fits it better ({alone:.3f} alone)"
    best = int(np.argmax(scores))
    score = article_score(scores, policy.agreeing)
    index, passage = passages[best]
    text = f"{article.title}\n{article.text}"
    keywords = found(topic.include, text)
    excluded = found(topic.exclude, text)
    ruled_out = bool(excluded) or bool(topic.include and not keywords)
    if excluded:
        verdict, reason = False, f"excluded keyword {excluded[0]!r}"
    elif topic.include and not keywords:
        verdict, reason = False, "none of the include keywords occurs"
    elif score >= threshold:
        verdict = True
        reason = f"score {score:.3f} >= {threshold:.3f} (best passage {index}"
        reason += f"{_closest_aspect(profile, vectors[best], article.language)})"
        if keywords:
            reason += f"; keywords: {', '.join(keywords)}"
        if claimed:
            reason += f"; {claimed}"
    else:
        verdict, reason = False, f"score {score:.3f} < {threshold:.3f}"
        if claimed:
            reason += f": {claimed}"
    return Match(topic.id, article.id, verdict, score, threshold, passage, index, keywords, reason,
                 ruled_out)  # fmt: skip


class StoryMatch(NamedTuple):
    """Another article of the story, as it matched the topic."""

    article_id: str
    score: float
    threshold: float


def story_supported(match: Match, story: Sequence[StoryMatch], policy: MatchPolicy) -> Match:
    """``match``, matched when it missed the threshold by at most ``policy.story_margin`` and
    another article of its story (``story``: that story's matches of the topic) scored at
    least ``policy.story_support`` above the threshold; else unchanged. A supported match lends
    no support in turn: it scores below the threshold."""
    if not near_miss(match, policy):
        return match
    clear = [m for m in story if m.article_id != match.article_id
             and m.score >= m.threshold + policy.story_support]  # fmt: skip
    if not clear:
        return match
    best = max(clear, key=lambda m: m.score - m.threshold)
    reason = (
        f"score {match.score:.3f}, just below {match.threshold:.3f}, and its story matched "
        f"clearly (article {best.article_id}: {best.score:.3f})"
    )
    return replace(match, matched=True, reason=reason)


def near_miss(match: Match, policy: MatchPolicy) -> bool:
    """Whether ``match`` missed by its score alone, by at most ``policy.story_margin``."""
    return (
        policy.story_margin > 0
        and not match.matched
        and not match.ruled_out
        and match.passage_index >= 0
        and match.score >= match.threshold - policy.story_margin
    )


def lends_support(match: Match, policy: MatchPolicy) -> bool:
    """Whether ``match`` is clear enough to support its story's near misses."""
    return (
        policy.story_margin > 0
        and match.matched
        and (match.score >= match.threshold + policy.story_support)
    )


def match_topics(
    profiles: Sequence[TopicProfile],
    article: ArticleView,
    passages: Sequence[tuple[int, str]],
    vectors: Matrix,
    policy: MatchPolicy,
) -> list[Match]:
    """Every topic's verdict on one article, once the topics have competed for its passages.

    A desk's topics are usually neighbours - the talks, the territory discussed there, the
    guarantees - and this model rates a report on one of them close to its neighbours'
    descriptions too. So each topic is first scored alone; then, where other topics match the
    article (in scope, keywords passed, score at their threshold), each passage that one of
    them fits better loses ``rival_contrast`` times the gap (``against_rival``). A passage
    belongs first to the topic it fits best: an article about two topics keeps each topic's
    own passages, one about a neighbour loses them all. A topic that no other topic's match
    contests scores as it would alone, and so does a topic set not to compete (``compete:
    false``: a broad topic that contains the others would lose their articles to them)."""
    if not passages:
        return [match_article(p, article, passages, vectors, policy) for p in profiles]
    scores = {p.topic.id: passage_scores(p, vectors, policy, article.language) for p in profiles}
    first = [match_article(p, article, passages, vectors, policy, scores=scores[p.topic.id])
             for p in profiles]  # fmt: skip
    claims = [m for p, m in zip(profiles, first, strict=True) if m.matched and p.topic.compete]
    if not policy.rival_contrast or not claims:
        return first
    verdicts = []
    named_in = _NamedIn(profiles, article) if policy.named_claims else None
    for profile, match in zip(profiles, first, strict=True):
        rivals = [m for m in claims if m.topic_id != match.topic_id]
        if not rivals or match.passage_index < 0 or not profile.topic.compete:
            verdicts.append(match)
            continue
        named = max(rivals, key=lambda m: m.score).topic_id
        own = named_in.names(profile.topic) if named_in is not None else ""
        if own:
            verdicts.append(replace(match, reason=f"{match.reason}; it names {own}, which only "
                                    f"this topic's name names: {named} takes nothing"))  # fmt: skip
            continue
        best = np.max(np.stack([scores[m.topic_id] for m in rivals]), axis=0)
        verdicts.append(match_article(profile, article, passages, vectors, policy,
                                      Rival(named, best), scores[profile.topic.id]))  # fmt: skip
    return verdicts


class _NamedIn:
    """Which topics' distinctive names an article names (``alerts.names``), worked out when a
    verdict first asks: most articles are contested by no topic."""

    def __init__(self, profiles: Sequence[TopicProfile], article: ArticleView) -> None:
        self._topics = [p.topic for p in profiles]
        self._text = f"{article.title}\n{article.text}"
        self._keys: list[str] | None = None

    def names(self, topic: Topic) -> str:
        """The first of ``topic``'s distinctive names the article names, as the topic's name
        writes it ("" if none)."""
        own = distinctive_names_among(topic, self._topics)
        if not own:
            return ""
        if self._keys is None:
            self._keys = text_keys(self._text)
        found_names = names_in(self._keys, own)
        return repr(name_as_written(topic.name, found_names[0])) if found_names else ""


def against_rival(scores: Matrix, rival_scores: Matrix, weight: float) -> Matrix:
    """Passage scores less ``weight`` times how much better a rival topic fits each passage."""
    adjusted: Matrix = (scores - weight * np.maximum(rival_scores - scores, 0.0)).astype(np.float32)
    return adjusted


def passage_scores(
    profile: TopicProfile, vectors: Matrix, policy: MatchPolicy, language: str
) -> Matrix:
    """The decision score of every passage of an article in ``language`` (module docstring)."""
    queries = profile.language_queries.get(language, profile.queries)
    scores = (vectors @ queries.T - language_offset(profile, language)).max(axis=1)
    if profile.context is not None and policy.contrast:
        scores = scores - policy.contrast * (vectors @ profile.context)
    baseline = policy.example_baseline
    scores = scores + policy.example_weight * _likeness(vectors, profile.positives, baseline)
    scores = scores - policy.negative_weight * _likeness(vectors, profile.negatives, baseline)
    return np.asarray(scores, dtype=np.float32)


def _closest_aspect(profile: TopicProfile, vector: Vector, language: str) -> str:
    """``, on <aspect>`` when the passage's best query is one of the description's aspects."""
    if len(profile.query_labels) < 2:
        return ""
    queries = profile.language_queries.get(language, profile.queries)
    closest = int(np.argmax(queries @ vector - language_offset(profile, language)))
    return f", on {profile.query_labels[closest]}" if closest else ""


def _likeness(vectors: Matrix, examples: Matrix, baseline: float) -> Matrix | float:
    """How much more each passage is like its nearest example than unrelated news is."""
    if not examples.size:
        return 0.0
    nearest: Matrix = (vectors @ examples.T).max(axis=1)
    above: Matrix = np.maximum(nearest - baseline, 0.0).astype(np.float32)
    return above


def article_score(passage_scores: Matrix, agreeing: int) -> float:
    """The mean of the best ``agreeing`` passage scores (all of them when there are fewer)."""
    best = np.sort(passage_scores)[-max(1, agreeing) :]
    return float(best.mean())


def refine_query(
    query: Vector, candidates: Matrix, offsets: Matrix, passages: int, weight: float
) -> Vector:
    """Pseudo-relevance feedback: ``query`` moved towards the mean of the ``passages``
    candidates with the best language-corrected score (``candidates @ query - offsets``)."""
    if not passages or not weight or not len(candidates):
        return query
    best = best_passages(query, candidates, offsets, passages)
    return move_towards(query, best, weight, expected=passages)


def claim_scores(queries: Matrix, offsets: Matrix, vectors: Matrix) -> Matrix:
    """How well a topic's unrefined queries fit each row: per row, the best of
    ``vectors @ queries.T - offsets`` (``offsets``: per row and query, the language offset of
    the row's language)."""
    fits: Matrix = (vectors @ queries.T - offsets).max(axis=1).astype(np.float32)
    return fits


def owned_rows(own: Matrix, others: Sequence[Matrix]) -> Matrix:
    """Which rows no other topic fits better than this one (``claim_scores`` of each): a
    neighbour's coverage that happens to be among a topic's best stored passages - as it is
    while the topic's own coverage is scarce - would draw the topic's query towards the
    neighbour."""
    if not others:
        return np.ones(len(own), dtype=bool)
    mask: Matrix = own >= np.max(np.stack(others), axis=0)
    return mask


def screen_feedback(
    topic: Topic,
    policy: MatchPolicy,
    claims: Mapping[str, Matrix],
    vectors: Matrix,
    languages: Sequence[str],
    means: Mapping[str, Vector],
    context: Vector | None,
    competing: Sequence[str] = (),
) -> Matrix:
    """Which stored passages (``vectors``, in ``languages``) may refine ``topic``'s queries:
    those its unrefined queries (``claims[topic.id]``) score at most ``feedback_margin`` below
    its threshold, and, when the topics compete for feedback, that none of the ``competing``
    topics' unrefined queries fit better (``owned_rows``)."""
    fits = {}
    for other, queries in claims.items():
        offsets = np.stack([queries @ means[lang] if lang in means
                            else np.zeros(len(queries), dtype=np.float32)
                            for lang in languages])  # fmt: skip
        fits[other] = claim_scores(queries, offsets, vectors)
    keep = np.ones(len(vectors), dtype=bool)
    if policy.feedback_margin is not None:
        threshold = topic.threshold if topic.threshold is not None else policy.threshold
        own = fits[topic.id]
        if context is not None and policy.contrast:
            own = own - policy.contrast * (vectors @ context)
        keep &= own >= threshold - policy.feedback_margin
    rivals = [fits[other] for other in competing if other != topic.id and other in fits]
    if policy.feedback_competition and topic.compete and rivals:
        keep &= owned_rows(fits[topic.id], rivals)
    return keep


def feedback_support(confident_articles: int, policy: MatchPolicy) -> float:
    """The share of the feedback weights a topic's refinement gets: in proportion to the
    stored articles its unrefined queries match with confidence, up to
    ``policy.confident_articles`` (``MatchPolicy.confident_margin``)."""
    if policy.confident_margin is None or policy.confident_articles <= 0:
        return 1.0
    return min(1.0, confident_articles / policy.confident_articles)


def best_passages(query: Vector, candidates: Matrix, offsets: Matrix, count: int) -> Matrix:
    """The ``count`` candidates with the best language-corrected score."""
    scores = candidates @ query - offsets
    best: Matrix = candidates[np.argsort(-scores)[:count]]
    return best


def move_towards(
    query: Vector, rows: Matrix, weight: float, *, expected: int | None = None
) -> Vector:
    """``query + weight * mean(rows)``, renormalised (``query`` itself when there are none).

    ``expected``: how many rows a full refinement draws on; with fewer (a young store, or
    screening left few) the weight shrinks in proportion - the missing rows count as zero - so
    one stray passage cannot swing a query."""
    if not weight or not len(rows):
        return query
    if expected:
        weight *= min(1.0, len(rows) / expected)
    moved = query + weight * rows.mean(axis=0)
    refined: Vector = (moved / np.linalg.norm(moved)).astype(np.float32)
    return refined


def nearest_rows(anchors: Matrix, pool: Matrix) -> Matrix:
    """For each anchor, its most similar row of ``pool`` (the cross-language step)."""
    if not len(anchors) or not len(pool):
        return np.zeros((0, pool.shape[1] if pool.ndim == 2 else 0), dtype=np.float32)
    nearest: Matrix = pool[np.argmax(anchors @ pool.T, axis=1)]
    return nearest


def language_offset(profile: TopicProfile, language: str) -> Vector | float:
    if not profile.offsets:
        return 0.0
    offset = profile.offsets.get(language)
    if offset is None:
        return np.mean(np.stack(list(profile.offsets.values())), axis=0)  # type: ignore[no-any-return]
    return offset


def _out_of_scope(topic: Topic, article: ArticleView) -> str | None:
    if topic.languages and article.language not in topic.languages:
        return f"language {article.language} not in {', '.join(topic.languages)}"
    if topic.sources and article.source not in topic.sources:
        return f"source {article.source!r} not among the topic's sources"
    return None
