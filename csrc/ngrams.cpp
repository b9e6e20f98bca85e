// N-gram statistics (see ngrams.h): Python-compatible whitespace splitting, exact token interning
// in an open-addressing table reused between groups, and chained n-gram ids.
// Speed choices, measured on bench_ngrams' data: 8-byte scanning for whitespace, tokens of <= 7
// bytes compared as one word, a token table that starts small (stays in cache), no hashing at all
// for orders >= 2 (see NgramCounter::count), and groups converted in chunks into a reused buffer
// (a fresh buffer for all texts showed up as page-fault time in profiles).
#include "ngrams.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace reversalkit {

namespace {

// Token positions and ids are uint32.
constexpr uint64_t kMaxTokens = uint64_t{0xFFFFFFFEu};

// Multiplicative (Fibonacci) hashing: the top `bits` bits of key * 2^64/phi pick the slot. One
// multiply per key; the top bits of the product depend on every bit of the key.
inline uint64_t slot_of(uint64_t key, int bits) { return (key * 0x9E3779B97F4A7C15ULL) >> (64 - bits); }

// A token's identity word. Tokens of at most 7 bytes are packed losslessly: their bytes in the low
// bits and their length in the top byte, so equal words mean equal tokens. Longer tokens get a
// 56-bit hash with top byte 0xFF, and a match is confirmed by comparing bytes.
constexpr uint64_t kLongTag = uint64_t{0xFF} << 56;

inline uint64_t token_word(const char* p, size_t n) {
    if (n <= 7) {
        uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n >= 4) {  // two overlapping 4-byte loads, each byte at its own position
            uint32_t a, b;
            std::memcpy(&a, p, 4);
            std::memcpy(&b, p + n - 4, 4);
            return uint64_t{a} | (uint64_t{b} << (8 * (n - 4))) | (uint64_t{n} << 56);
        }
#endif
        for (size_t i = 0; i < n; ++i) w |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
        return w | (uint64_t{n} << 56);
    }
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 29;
    }
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ULL;
    h *= 0xbf58476d1ce4e5b9ULL;
    return ((h ^ (h >> 31)) & ~kLongTag) | kLongTag;
}

// Byte classes for the splitter: 1 = ASCII whitespace, 2 = lead byte of a possible multi-byte
// whitespace character (U+0085, U+00A0, U+1680, U+2000.., U+3000), 0 = anything else.
constexpr std::array<uint8_t, 256> make_byte_class() {
    std::array<uint8_t, 256> c{};
    for (int b : {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20}) c[b] = 1;
    for (int b : {0xC2, 0xE1, 0xE2, 0xE3}) c[b] = 2;
    return c;
}
constexpr std::array<uint8_t, 256> kByteClass = make_byte_class();

// Length in bytes of the whitespace character at p (0 when it is not whitespace).
inline size_t whitespace_len(const unsigned char* p, const unsigned char* end) {
    const uint8_t cls = kByteClass[*p];
    if (cls != 2) return cls;
    if (*p == 0xC2) {
        return (end - p >= 2 && is_python_whitespace(((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu))) ? 2 : 0;
    }
    if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    const uint32_t cp = ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return is_python_whitespace(cp) ? 3 : 0;
}

// Index of the first of the 8 bytes at p that may start whitespace (<= 0x20 or >= 0x80), or 8.
// Bytes are examined in address order on little-endian machines; elsewhere one at a time.
inline unsigned first_candidate(const unsigned char* p) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    std::memcpy(&w, p, 8);
    constexpr uint64_t kHigh = 0x8080808080808080ULL;
    // Flags bytes >= 0x80 exactly, and bytes < 0x21; a borrow can only add false flags ABOVE a
    // true one, so the lowest flag is exact.
    const uint64_t flags = (w & kHigh) | ((w - 0x2121212121212121ULL) & ~w & kHigh);
    return flags ? static_cast<unsigned>(__builtin_ctzll(flags)) >> 3 : 8u;
#else
    for (unsigned i = 0; i < 8; ++i) {
        if (p[i] <= 0x20 || p[i] >= 0x80) return i;
    }
    return 8u;
#endif
}

// First whitespace character at or after q (end when there is none).
inline const unsigned char* find_whitespace(const unsigned char* q, const unsigned char* end) {
    for (;;) {
        if (end - q >= 8) {
            const unsigned k = first_candidate(q);
            q += k;
            if (k == 8) continue;
        } else {
            while (q < end && kByteClass[*q] == 0) ++q;
            if (q == end) return end;
        }
        if (whitespace_len(q, end)) return q;
        ++q;  // a candidate byte that is not whitespace after all (e.g. part of a letter)
    }
}

}  // namespace

bool is_python_whitespace(uint32_t cp) {
    switch (cp) {
        case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
        case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
        case 0x85: case 0xA0: case 0x1680:
        case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
            return true;
        default:
            return cp >= 0x2000 && cp <= 0x200A;
    }
}

void split_whitespace(std::string_view text, std::vector<std::string_view>& out) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        size_t ws;
        while (p < end && (ws = whitespace_len(p, end)) != 0) p += ws;
        if (p == end) break;
        const unsigned char* q = find_whitespace(p + 1, end);  // p itself is not whitespace
        out.emplace_back(reinterpret_cast<const char*>(p), static_cast<size_t>(q - p));
        p = q;
    }
}

int NgramCounter::begin_token_epoch(size_t min_slots) {
    int bits = 4;
    while ((size_t{1} << bits) < min_slots) ++bits;
    const size_t cap = size_t{1} << bits;
    if (token_table_.size() < cap) {
        token_table_.assign(cap, TokenSlot{});  // epoch 0 everywhere: free for any epoch >= 1
        token_epoch_ = 0;
    }
    if (++token_epoch_ == 0) {  // wrapped after 2^32 uses: clear once and start over
        for (TokenSlot& s : token_table_) s.epoch = 0;
        token_epoch_ = 1;
    }
    return bits;
}

uint32_t NgramCounter::intern_token(std::string_view token, int bits) {
    const uint64_t word = token_word(token.data(), token.size());
    const uint64_t mask = (uint64_t{1} << bits) - 1;
    for (uint64_t i = slot_of(word, bits);; i = (i + 1) & mask) {
        TokenSlot& s = token_table_[i];
        if (s.epoch != token_epoch_) {
            const auto id = static_cast<uint32_t>(first_tokens_.size());
            s = TokenSlot{word, id, token_epoch_};
            first_tokens_.push_back(token);
            return id;
        }
        if (s.word == word && ((word & kLongTag) != kLongTag || first_tokens_[s.id] == token)) return s.id;
    }
}

int NgramCounter::grow_token_table(int bits) {
    const size_t cap = size_t{1} << bits;
    live_tokens_.clear();
    for (size_t i = 0; i < cap; ++i) {
        if (token_table_[i].epoch == token_epoch_) live_tokens_.push_back(token_table_[i]);
    }
    const int new_bits = begin_token_epoch(2 * cap);
    const uint64_t mask = (uint64_t{1} << new_bits) - 1;
    for (TokenSlot t : live_tokens_) {
        uint64_t i = slot_of(t.word, new_bits);
        while (token_table_[i].epoch == token_epoch_) i = (i + 1) & mask;
        t.epoch = token_epoch_;
        token_table_[i] = t;
    }
    return new_bits;
}

int64_t NgramCounter::count_positions(int n, uint32_t num_prefixes) {
    // Counting sort of the start positions of order-n n-grams by their prefix id ids_[i].
    bucket_ends_.assign(size_t{num_prefixes} + 1, 0);
    const size_t num_texts = text_starts_.size() - 1;
    int64_t total = 0;
    for (size_t t = 0; t < num_texts; ++t) {
        const int64_t last = int64_t{text_starts_[t + 1]} - n;  // last start of an n-gram
        for (int64_t i = text_starts_[t]; i <= last; ++i) ++bucket_ends_[ids_[i] + 1];
        if (last >= text_starts_[t]) total += last - text_starts_[t] + 1;
    }
    if (total == 0) return 0;
    for (size_t b = 1; b <= num_prefixes; ++b) bucket_ends_[b] += bucket_ends_[b - 1];
    order_.resize(static_cast<size_t>(total));
    for (size_t t = 0; t < num_texts; ++t) {
        const int64_t last = int64_t{text_starts_[t + 1]} - n;
        for (int64_t i = text_starts_[t]; i <= last; ++i) {
            order_[bucket_ends_[ids_[i]]++] = static_cast<uint32_t>(i);
        }
    }
    return total;
}

NgramCounts NgramCounter::count(const std::vector<std::string_view>& texts, int max_n) {
    if (max_n < 1) throw std::invalid_argument("max_n must be >= 1, got " + std::to_string(max_n));
    NgramCounts out{std::vector<int64_t>(max_n, 0), std::vector<int64_t>(max_n, 0)};

    tokens_.clear();
    text_starts_.assign(1, 0);
    for (std::string_view t : texts) {
        split_whitespace(t, tokens_);
        if (tokens_.size() > kMaxTokens) {
            throw std::invalid_argument("a group holds more than 2^32-2 tokens; split it");
        }
        text_starts_.push_back(static_cast<uint32_t>(tokens_.size()));
    }
    const size_t num_tokens = tokens_.size();
    if (num_tokens == 0) return out;

    // Order 1: intern every token. Sampled text repeats most tokens, so the table starts small (room
    // for a quarter of the tokens at load 1/2) and doubles when needed: a small table stays in cache.
    int bits = begin_token_epoch(num_tokens / 2);
    token_ids_.resize(num_tokens);
    first_tokens_.clear();
    for (size_t i = 0; i < num_tokens; ++i) {
        token_ids_[i] = intern_token(tokens_[i], bits);
        if (2 * first_tokens_.size() > (size_t{1} << bits)) bits = grow_token_table(bits);
    }
    const auto num_unique = static_cast<uint32_t>(first_tokens_.size());
    out.unique[0] = num_unique;
    out.total[0] = static_cast<int64_t>(num_tokens);
    ids_.assign(token_ids_.begin(), token_ids_.end());

    // Order n: ids_[i] holds the id of the (n-1)-gram at i, and (that id, token at i+n-1) names the
    // n-gram. Ids are dense, so instead of hashing the pairs, positions are bucketed by prefix id
    // (a counting sort) and, within a bucket, tokens get ids through a direct-address table
    // stamped with the bucket: exact, and free of the unpredictable branches of a hash probe.
    uint32_t num_prev = num_unique;
    stamp_.assign(num_unique, 0);
    last_id_.resize(num_unique);
    uint64_t base = 0;  // stamps of this order are base + bucket + 1, never seen before
    for (int n = 2; n <= max_n; ++n) {
        const int64_t total = count_positions(n, num_prev);
        if (total == 0) break;  // every higher order is empty as well
        uint32_t next_id = 0;
        for (int64_t k = 0; k < total; ++k) {
            const uint32_t pos = order_[k];
            const uint64_t stamp = base + ids_[pos] + 1;
            const uint32_t tok = token_ids_[pos + n - 1];
            const bool fresh = stamp_[tok] != stamp;
            stamp_[tok] = stamp;
            last_id_[tok] = fresh ? next_id : last_id_[tok];
            ids_[pos] = last_id_[tok];
            next_id += fresh;
        }
        base += num_prev;
        num_prev = next_id;
        out.unique[n - 1] = next_id;
        out.total[n - 1] = total;
    }
    return out;
}

void count_groups(const std::vector<std::vector<std::string_view>>& groups, int max_n, int num_threads,
                  int64_t* out) {
    if (max_n < 1) throw std::invalid_argument("max_n must be >= 1, got " + std::to_string(max_n));
    const size_t num_groups = groups.size();
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&]() {
        NgramCounter counter;
        try {
            for (size_t g = next++; g < num_groups; g = next++) {  // dynamic: group sizes vary
                const NgramCounts c = counter.count(groups[g], max_n);
                for (int n = 0; n < max_n; ++n) {
                    out[(g * max_n + n) * 2] = c.unique[n];
                    out[(g * max_n + n) * 2 + 1] = c.total[n];
                }
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = num_groups;
        }
    };
    const size_t threads = std::min<size_t>(std::max(num_threads, 1), std::max<size_t>(num_groups, 1));
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();  // the calling thread works too
    for (std::thread& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace reversalkit

// ---------------------------------------------------------------------------------------------
// Python bindings (called from bindings.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace {

// Appends the lower-cased UTF-8 form of str `obj` to buf. ASCII strings are lowered here (the
// same mapping str.lower() applies to ASCII); others go through str.lower() itself, encoded with
// "surrogatepass" so lone surrogates survive as distinct non-whitespace bytes.
void append_lowered(PyObject* obj, std::string& buf) {
    if (!PyUnicode_Check(obj)) {
        throw py::type_error(std::string("texts must be str, got ") + Py_TYPE(obj)->tp_name);
    }
    if (PyUnicode_IS_ASCII(obj)) {
        const auto* data = static_cast<const char*>(PyUnicode_DATA(obj));
        const Py_ssize_t n = PyUnicode_GET_LENGTH(obj);
        const size_t off = buf.size();
        buf.resize(off + static_cast<size_t>(n));
        char* dst = buf.data() + off;
        for (Py_ssize_t i = 0; i < n; ++i) {  // branch-free, so the compiler vectorizes it
            const char c = data[i];
            dst[i] = static_cast<char>(c + ((static_cast<unsigned char>(c - 'A') < 26u) ? 32 : 0));
        }
        return;
    }
    py::object lowered = py::reinterpret_borrow<py::object>(obj).attr("lower")();
    py::object bytes = py::reinterpret_steal<py::object>(
        PyUnicode_AsEncodedString(lowered.ptr(), "utf-8", "surrogatepass"));
    if (!bytes) throw py::error_already_set();
    buf.append(PyBytes_AS_STRING(bytes.ptr()), PyBytes_GET_SIZE(bytes.ptr()));
}

py::array_t<int64_t> ngram_counts(py::sequence groups, int max_n, int num_threads) {
    if (max_n < 1) throw py::value_error("max_n must be >= 1, got " + std::to_string(max_n));
    if (num_threads < 1) throw py::value_error("num_threads must be >= 1, got " + std::to_string(num_threads));
    const auto num_groups = static_cast<size_t>(py::len(groups));
    py::array_t<int64_t> result({static_cast<py::ssize_t>(num_groups), static_cast<py::ssize_t>(max_n),
                                 py::ssize_t{2}});
    int64_t* out = result.mutable_data();
    // Groups go in chunks: texts are lowered into one reused buffer (GIL held), then the chunk is
    // counted with the GIL released. Chunks keep memory flat however many groups come in.
    const size_t chunk = std::max<size_t>(64, 16 * static_cast<size_t>(num_threads));
    std::string buf;
    std::vector<size_t> text_ends;
    std::vector<std::vector<std::string_view>> views;
    for (size_t first = 0; first < num_groups; first += chunk) {
        const size_t count = std::min(chunk, num_groups - first);
        buf.clear();
        text_ends.clear();
        std::vector<size_t> group_ends;  // (count,) index into text_ends
        for (size_t g = first; g < first + count; ++g) {
            py::object group = groups[static_cast<py::ssize_t>(g)];
            if (PyUnicode_Check(group.ptr())) {
                throw py::type_error("each group must be a sequence of str, got a str (wrap it in a list)");
            }
            for (py::handle text : py::iter(group)) {
                append_lowered(text.ptr(), buf);
                text_ends.push_back(buf.size());
            }
            group_ends.push_back(text_ends.size());
        }
        views.resize(count);  // views are taken only now that buf has stopped growing
        size_t t = 0, start = 0;
        for (size_t g = 0; g < count; ++g) {
            views[g].clear();
            for (; t < group_ends[g]; ++t) {
                views[g].emplace_back(buf.data() + start, text_ends[t] - start);
                start = text_ends[t];
            }
        }
        py::gil_scoped_release release;
        reversalkit::count_groups(views, max_n, num_threads, out + first * static_cast<size_t>(max_n) * 2);
    }
    return result;
}

std::vector<std::string> split_whitespace_py(const std::string& text) {
    std::vector<std::string_view> views;
    reversalkit::split_whitespace(text, views);
    return {views.begin(), views.end()};
}

}  // namespace

void bind_ngrams(py::module_& m) {
    m.def("ngram_counts", &ngram_counts, py::arg("groups"), py::arg("max_n"), py::arg("num_threads") = 1,
          "Distinct and total n-gram counts per group of texts.\n\n"
          "groups: sequence of sequences of str; each text is lower-cased and split like\n"
          "str.lower().split(); n-grams never span two texts. Groups are counted on up to\n"
          "num_threads threads with the GIL released.\n"
          "Returns int64 array (num_groups, max_n, 2): [g, n-1] = (unique, total) for order n.");
    m.def("split_whitespace", &split_whitespace_py, py::arg("text"),
          "Split UTF-8 text on exactly the characters Python's str.split() splits on.");
    m.def("is_python_whitespace", &reversalkit::is_python_whitespace, py::arg("code_point"),
          "True for the code points str.split() treats as whitespace.");
}
