// N-gram statistics over whitespace-tokenized text: the hot loop of distinct-n in
// reversalkit.metrics. Plain C++17, no Python; the pybind11 section sits at the end of ngrams.cpp.
//
// Exactness: distinct counts are exact, never estimates. Tokens are interned by comparing their
// bytes (a hash only picks the slot). An n-gram is identified by the pair (id of its (n-1)-gram
// prefix, id of its last token), and ids are dense, so each distinct pair gets its id without any
// hashing (positions bucketed by prefix id, then a direct-address table over token ids). The
// counts therefore equal those of a Python set of token tuples on every input.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace reversalkit {

// True for exactly the code points Python's str.split() (no argument) splits on.
bool is_python_whitespace(uint32_t code_point);

// Appends to `out` the tokens of UTF-8 `text` split as Python's str.split() does: on runs of
// the code points above, dropping empty tokens. Invalid UTF-8 bytes count as non-whitespace.
void split_whitespace(std::string_view text, std::vector<std::string_view>& out);

// unique[n-1] / total[n-1]: distinct and total n-grams of order n = 1..max_n of one group.
struct NgramCounts {
    std::vector<int64_t> unique;
    std::vector<int64_t> total;
};

// Counts n-grams over groups of texts, reusing its buffers between groups; not thread-safe
// (use one counter per thread).
class NgramCounter {
public:
    // N-grams of orders 1..max_n over `texts` (each already lower-cased, UTF-8); an n-gram never
    // spans two texts. Throws std::invalid_argument for max_n < 1 or more than 2^32-2 tokens.
    NgramCounts count(const std::vector<std::string_view>& texts, int max_n);

private:
    // Open-addressing slots for tokens. A slot is free unless its epoch equals the table's current
    // epoch, so starting a new group only bumps a counter instead of clearing the table.
    struct TokenSlot {
        uint64_t word;  // the token packed (<= 7 bytes) or hashed, see token_word in ngrams.cpp
        uint32_t id;
        uint32_t epoch;
    };
    int begin_token_epoch(size_t min_slots);  // fresh (empty) table of >= min_slots -> log2(slots)

    uint32_t intern_token(std::string_view token, int bits);  // -> its id (new ids are dense)
    int grow_token_table(int bits);  // doubles the token table, keeping its entries -> new bits
    // Fills order_ with the start positions of order-n n-grams sorted by prefix id; -> their count.
    int64_t count_positions(int n, uint32_t num_prefixes);

    std::vector<std::string_view> tokens_;
    std::vector<uint32_t> text_starts_;  // (num_texts + 1,) token offsets
    std::vector<uint32_t> ids_;          // (num_tokens,) id of the n-gram starting at each token
    std::vector<uint32_t> token_ids_;    // (num_tokens,) id of each token
    std::vector<TokenSlot> token_table_;
    std::vector<TokenSlot> live_tokens_;  // scratch for grow_token_table
    std::vector<std::string_view> first_tokens_;  // (num_unique_tokens,) first occurrence per id
    std::vector<uint32_t> bucket_ends_;   // (num_prefixes + 1,) counting-sort offsets
    std::vector<uint32_t> order_;         // (num_ngrams,) positions sorted by prefix id
    std::vector<uint64_t> stamp_;         // (num_unique_tokens,) bucket stamp per token id
    std::vector<uint32_t> last_id_;       // (num_unique_tokens,) n-gram id given in that bucket
    uint32_t token_epoch_ = 0;
};

// Counts every group with NgramCounter on up to num_threads threads (groups are independent).
// out: (groups.size(), max_n, 2) row-major int64, [g][n-1] = (unique, total). Rethrows the first
// exception a worker raised.
void count_groups(const std::vector<std::vector<std::string_view>>& groups, int max_n, int num_threads,
                  int64_t* out);

}  // namespace reversalkit
