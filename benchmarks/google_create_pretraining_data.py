"""The anchor: a faithful pure-Python port of google-research/bert ``create_pretraining_data.py``.

Same algorithm and the same data flow as Google's script (Apache-2.0, https://github.com/google-research/bert):

1. read every input line, ``strip()`` it, tokenize it into token *strings*; a blank line starts a new document;
   every document is held in memory as ``list[list[str]]`` (``all_documents``);
2. drop empty documents, ``rng.shuffle(all_documents)``;
3. ``dupe_factor`` passes of :func:`create_instances_from_document` over every document, each instance masked
   statically by :func:`create_masked_lm_predictions` (strings in, strings out); all instances are kept in one
   list, which is ``rng.shuffle``-d at the end;
4. convert tokens to ids (``convert_tokens_to_ids``), zero-pad, and write the features of every instance.

Differences, none of which slows it down:

* The tokenizer is a ``tokenizers.Tokenizer`` (Rust) loaded from a ``tokenizer.json``, called once per line
  (``encode(line, add_special_tokens=False).tokens``), in place of Google's pure-Python ``FullTokenizer``; it
  gives the same kind of output (WordPiece token strings) and is much faster than the original.
* Google writes ``tf.train.Example`` protos to TFRecord files. TensorFlow is not a dependency here, so every
  instance's int features (``input_ids, input_mask, segment_ids`` padded to ``max_seq_length``;
  ``masked_lm_positions, masked_lm_ids`` padded to ``max_predictions_per_seq``; ``next_sentence_labels``) are
  written as one ``int32`` record with ``numpy.ndarray.tofile``, followed by ``masked_lm_weights`` as
  ``float32`` (the same values as Google's features, a fixed-size binary record instead of a proto).
* ``do_whole_word_mask`` is kept (default off, as in Google's flags).
* ``TrainingInstance`` has ``__slots__`` (a little less memory per instance than Google's plain class).

Run it on its own::

    python benchmarks/google_create_pretraining_data.py --input_file corpus.txt --output_file out.bin \\
        --tokenizer tokenizer.json --max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 5
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time

import numpy as np
from tokenizers import Tokenizer


class TrainingInstance:
    """A single training instance (sentence pair)."""

    __slots__ = ("tokens", "segment_ids", "is_random_next", "masked_lm_positions", "masked_lm_labels")

    def __init__(self, tokens, segment_ids, masked_lm_positions, masked_lm_labels, is_random_next):
        self.tokens = tokens
        self.segment_ids = segment_ids
        self.is_random_next = is_random_next
        self.masked_lm_positions = masked_lm_positions
        self.masked_lm_labels = masked_lm_labels


MaskedLmInstance = collections.namedtuple("MaskedLmInstance", ["index", "label"])


class FullTokenizer:
    """Google's ``tokenization.FullTokenizer`` interface over a ``tokenizer.json`` (token strings in and out)."""

    def __init__(self, tokenizer_file: str):
        self._tok = Tokenizer.from_file(tokenizer_file)
        # Google's load_vocab: an OrderedDict token -> id in vocab-file order (= id order).
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab = collections.OrderedDict(sorted(vocab.items(), key=lambda kv: kv[1]))

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens):
        # Google's convert_by_vocab: one dict lookup per token.
        output = []
        for item in tokens:
            output.append(self.vocab[item])
        return output


def read_documents(input_files, tokenizer):
    """Phase 1 of Google's ``create_training_instances``: every line tokenized, all documents in memory."""
    all_documents = [[]]
    # Input file format:
    # (1) One sentence per line.
    # (2) Blank lines between documents.
    for input_file in input_files:
        with open(input_file, encoding="utf-8") as reader:
            for line in reader:
                line = line.strip()
                # Empty lines are used as document delimiters
                if not line:
                    all_documents.append([])
                else:
                    tokens = tokenizer.tokenize(line)
                    if tokens:
                        all_documents[-1].append(tokens)
    # Remove empty documents
    return [x for x in all_documents if x]


def create_training_instances_from_documents(
    all_documents,
    tokenizer,
    max_seq_length,
    dupe_factor,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    rng,
    do_whole_word_mask=False,
):
    """Phase 2 of Google's ``create_training_instances`` (after reading): shuffle, dupe passes, final shuffle."""
    rng.shuffle(all_documents)

    vocab_words = list(tokenizer.vocab.keys())
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(all_documents)):
            instances.extend(
                create_instances_from_document(
                    all_documents,
                    document_index,
                    max_seq_length,
                    short_seq_prob,
                    masked_lm_prob,
                    max_predictions_per_seq,
                    vocab_words,
                    rng,
                    do_whole_word_mask,
                )
            )

    rng.shuffle(instances)
    return instances


def create_training_instances(
    input_files,
    tokenizer,
    max_seq_length,
    dupe_factor,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    rng,
    do_whole_word_mask=False,
):
    """Create ``TrainingInstance``s from raw text (Google's function, split into its two phases above)."""
    all_documents = read_documents(input_files, tokenizer)
    return create_training_instances_from_documents(
        all_documents,
        tokenizer,
        max_seq_length,
        dupe_factor,
        short_seq_prob,
        masked_lm_prob,
        max_predictions_per_seq,
        rng,
        do_whole_word_mask,
    )


def create_instances_from_document(
    all_documents,
    document_index,
    max_seq_length,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    vocab_words,
    rng,
    do_whole_word_mask=False,
):
    """Creates ``TrainingInstance``s for a single document."""
    document = all_documents[document_index]

    # Account for [CLS], [SEP], [SEP]
    max_num_tokens = max_seq_length - 3

    # We *usually* want to fill up the entire sequence; *sometimes* (short_seq_prob) use a shorter target to
    # minimize the mismatch between pre-training and fine-tuning. The target is rough; max_seq_length is hard.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    # Segments "A" and "B" are made of the actual sentences of the input.
    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                # `a_end` is how many segments from `current_chunk` go into the `A` (first) sentence.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)

                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])

                tokens_b = []
                # Random next
                is_random_next = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)

                    # Try to make sure the random document is not the document we are processing.
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break

                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # We didn't actually use these segments so we "put them back" so they don't go to waste.
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                # Actual next
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)

                assert len(tokens_a) >= 1
                assert len(tokens_b) >= 1

                tokens = []
                segment_ids = []
                tokens.append("[CLS]")
                segment_ids.append(0)
                for token in tokens_a:
                    tokens.append(token)
                    segment_ids.append(0)

                tokens.append("[SEP]")
                segment_ids.append(0)

                for token in tokens_b:
                    tokens.append(token)
                    segment_ids.append(1)
                tokens.append("[SEP]")
                segment_ids.append(1)

                (tokens, masked_lm_positions, masked_lm_labels) = create_masked_lm_predictions(
                    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng, do_whole_word_mask
                )
                instance = TrainingInstance(
                    tokens=tokens,
                    segment_ids=segment_ids,
                    is_random_next=is_random_next,
                    masked_lm_positions=masked_lm_positions,
                    masked_lm_labels=masked_lm_labels,
                )
                instances.append(instance)
            current_chunk = []
            current_length = 0
        i += 1

    return instances


def create_masked_lm_predictions(
    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng, do_whole_word_mask=False
):
    """Creates the predictions for the masked LM objective."""
    cand_indexes = []
    for i, token in enumerate(tokens):
        if token == "[CLS]" or token == "[SEP]":
            continue
        # Whole Word Masking: a "##" piece joins the candidate of the piece before it.
        if do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])

    rng.shuffle(cand_indexes)

    output_tokens = list(tokens)

    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))

    masked_lms = []
    covered_indexes = set()
    for index_set in cand_indexes:
        if len(masked_lms) >= num_to_predict:
            break
        # If adding a whole-word mask would exceed the maximum number of predictions, skip this candidate.
        if len(masked_lms) + len(index_set) > num_to_predict:
            continue
        is_any_index_covered = False
        for index in index_set:
            if index in covered_indexes:
                is_any_index_covered = True
                break
        if is_any_index_covered:
            continue
        for index in index_set:
            covered_indexes.add(index)

            masked_token = None
            # 80% of the time, replace with [MASK]
            if rng.random() < 0.8:
                masked_token = "[MASK]"
            else:
                # 10% of the time, keep original
                if rng.random() < 0.5:
                    masked_token = tokens[index]
                # 10% of the time, replace with random word
                else:
                    masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]

            output_tokens[index] = masked_token

            masked_lms.append(MaskedLmInstance(index=index, label=tokens[index]))
    assert len(masked_lms) <= num_to_predict
    masked_lms = sorted(masked_lms, key=lambda x: x.index)

    masked_lm_positions = []
    masked_lm_labels = []
    for p in masked_lms:
        masked_lm_positions.append(p.index)
        masked_lm_labels.append(p.label)

    return (output_tokens, masked_lm_positions, masked_lm_labels)


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Truncates a pair of sequences to a maximum sequence length."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_num_tokens:
            break

        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1

        # We want to sometimes truncate from the front and sometimes from the back to add more randomness
        # and avoid biases.
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def write_instance_to_example_files(
    instances, tokenizer, max_seq_length, max_predictions_per_seq, output_file
):
    """Google's writer, minus TensorFlow: the same features, one fixed-size binary record per instance.

    Record: ``int32[3 * max_seq_length + 2 * max_predictions_per_seq + 1]`` (input_ids, input_mask,
    segment_ids, masked_lm_positions, masked_lm_ids, next_sentence_labels) then
    ``float32[max_predictions_per_seq]`` (masked_lm_weights). Returns the number written.
    """
    total_written = 0
    with open(output_file, "wb") as writer:
        for instance in instances:
            input_ids = tokenizer.convert_tokens_to_ids(instance.tokens)
            input_mask = [1] * len(input_ids)
            segment_ids = list(instance.segment_ids)
            assert len(input_ids) <= max_seq_length

            while len(input_ids) < max_seq_length:
                input_ids.append(0)
                input_mask.append(0)
                segment_ids.append(0)

            assert len(input_ids) == max_seq_length
            assert len(input_mask) == max_seq_length
            assert len(segment_ids) == max_seq_length

            masked_lm_positions = list(instance.masked_lm_positions)
            masked_lm_ids = tokenizer.convert_tokens_to_ids(instance.masked_lm_labels)
            masked_lm_weights = [1.0] * len(masked_lm_ids)

            while len(masked_lm_positions) < max_predictions_per_seq:
                masked_lm_positions.append(0)
                masked_lm_ids.append(0)
                masked_lm_weights.append(0.0)

            next_sentence_label = 1 if instance.is_random_next else 0

            # Google: collections.OrderedDict of create_int_feature(...) -> tf.train.Example -> TFRecordWriter.
            features = collections.OrderedDict()
            features["input_ids"] = input_ids
            features["input_mask"] = input_mask
            features["segment_ids"] = segment_ids
            features["masked_lm_positions"] = masked_lm_positions
            features["masked_lm_ids"] = masked_lm_ids
            features["next_sentence_labels"] = [next_sentence_label]
            record = []
            for values in features.values():
                record.extend(values)
            np.asarray(record, dtype=np.int32).tofile(writer)
            np.asarray(masked_lm_weights, dtype=np.float32).tofile(writer)
            total_written += 1
    return total_written


def run(
    input_files,
    output_file,
    tokenizer_file,
    max_seq_length=128,
    max_predictions_per_seq=20,
    random_seed=12345,
    dupe_factor=10,
    masked_lm_prob=0.15,
    short_seq_prob=0.1,
    do_whole_word_mask=False,
):
    """Google's ``main``, timed phase by phase; returns the timings and counts (seconds, instances, ...)."""
    t0 = time.perf_counter()
    tokenizer = FullTokenizer(tokenizer_file)
    rng = random.Random(random_seed)
    all_documents = read_documents(input_files, tokenizer)
    t1 = time.perf_counter()
    n_documents = len(all_documents)
    n_sentences = sum(len(d) for d in all_documents)
    n_tokens = sum(len(s) for d in all_documents for s in d)
    t1b = time.perf_counter()  # the counting above is bookkeeping for the report, not part of Google's flow
    instances = create_training_instances_from_documents(
        all_documents,
        tokenizer,
        max_seq_length,
        dupe_factor,
        short_seq_prob,
        masked_lm_prob,
        max_predictions_per_seq,
        rng,
        do_whole_word_mask,
    )
    t2 = time.perf_counter()
    written = write_instance_to_example_files(
        instances, tokenizer, max_seq_length, max_predictions_per_seq, output_file
    )
    t3 = time.perf_counter()
    return {
        "documents": n_documents,
        "sentences": n_sentences,
        "tokens": n_tokens,
        "instances": written,
        "random_next": sum(1 for x in instances if x.is_random_next),
        "masked_predictions": sum(len(x.masked_lm_positions) for x in instances),
        "tokenize_s": t1 - t0,
        "instances_s": t2 - t1b,
        "write_s": t3 - t2,
        "total_s": (t1 - t0) + (t3 - t1b),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input_file", required=True, help="input text file(s), comma-separated")
    p.add_argument("--output_file", required=True)
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (WordPiece)")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--random_seed", type=int, default=12345)
    p.add_argument("--dupe_factor", type=int, default=10)
    p.add_argument("--masked_lm_prob", type=float, default=0.15)
    p.add_argument("--short_seq_prob", type=float, default=0.1)
    p.add_argument("--do_whole_word_mask", action="store_true")
    a = p.parse_args(argv)
    result = run(
        a.input_file.split(","),
        a.output_file,
        a.tokenizer,
        a.max_seq_length,
        a.max_predictions_per_seq,
        a.random_seed,
        a.dupe_factor,
        a.masked_lm_prob,
        a.short_seq_prob,
        a.do_whole_word_mask,
    )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
