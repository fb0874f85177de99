#include "neuralpower/csv.hpp"

#include <array>
#include <cstring>

#include "neuralpower/layer.hpp"
#include "neuralpower/row_cache.hpp"

namespace neuralpower {

namespace {

// The characters that end an unquoted field (or, a quote, make the fast reader give up).
struct StopTable {
    bool stop[256] = {};
    constexpr StopTable() : stop{} {
        stop[static_cast<unsigned char>(',')] = true;
        stop[static_cast<unsigned char>('\n')] = true;
        stop[static_cast<unsigned char>('\r')] = true;
        stop[static_cast<unsigned char>('"')] = true;
    }
    constexpr bool operator[](unsigned char c) const { return stop[c]; }
};
constexpr StopTable kStop{};

// The name's code among `names` (matching ignores ASCII case and surrounding spaces), or -1.
int lookup(const char* s, std::size_t len, const std::vector<std::string>& names) {
    while (len > 0 && s[0] == ' ') ++s, --len;
    while (len > 0 && s[len - 1] == ' ') --len;
    if (len == 0 || len > 64) return -1;
    char lower[64];
    for (std::size_t i = 0; i < len; ++i) {
        const char c = s[i];
        lower[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    }
    for (std::size_t k = 0; k < names.size(); ++k)
        if (names[k].size() == len && std::memcmp(names[k].data(), lower, len) == 0) return static_cast<int>(k);
    return -1;
}

// A plain integer: an optional minus and 1 to 18 digits. Returns false for anything else.
bool parse_int(const char* s, std::size_t len, std::int64_t* v) {
    bool neg = false;
    if (len > 0 && s[0] == '-') {
        neg = true;
        ++s;
        --len;
    }
    if (len == 0 || len > 18) return false;
    std::int64_t x = 0;
    for (std::size_t i = 0; i < len; ++i) {
        const unsigned d = static_cast<unsigned char>(s[i]) - '0';
        if (d > 9) return false;
        x = x * 10 + d;
    }
    *v = neg ? -x : x;
    return true;
}

void push(CsvStrings* s, const char* p, std::size_t len) {
    s->data.append(p, len);
    s->offsets.push_back(static_cast<std::int32_t>(s->data.size()));
    s->valid.push_back(len > 0 ? 1 : 0);  // an empty cell, quoted or not, is empty (as the general reader reads it)
}

}  // namespace

bool parse_csv(const char* text, std::size_t len, const std::vector<CsvRole>& roles, std::size_t n_extras,
               const std::vector<std::string>& types, const std::vector<std::string>& dtypes, CsvBlock* out) {
    out->extras.assign(n_extras, CsvStrings{});
    const std::size_t n_cols = roles.size();
    // room for every record at once: at most one per line
    std::size_t lines = 1;
    for (const char* p = text; (p = static_cast<const char*>(std::memchr(p, '\n', text + len - p))) != nullptr; ++p)
        ++lines;
    out->index.reserve(lines);
    for (CsvStrings* s : {&out->arch, &out->layer}) {
        s->offsets.reserve(lines + 1);
        s->valid.reserve(lines);
    }
    // A record's key is the fields its columns give (the others are empty in every record; a pair column's second
    // field repeats its first): a record whose key was seen before is the same prepared row, made and stored once.
    std::vector<int> given;
    for (const CsvRole& role : roles) {
        if (role.kind == CsvRole::Kind::Type) given.push_back(kType);
        if (role.kind == CsvRole::Kind::DType) given.push_back(role.field);
        if (role.kind == CsvRole::Kind::Int) given.push_back(role.field);
    }
    const int k = static_cast<int>(given.size());
    RowCache<std::int32_t> ids(k);
    std::vector<std::int64_t> key(given.size());
    std::size_t i = 0;
    std::string unquoted;
    std::array<std::int64_t, kNumFields> row;
    while (i < len) {
        // blank lines are skipped (as the general reader does)
        if (text[i] == '\n') {
            ++i;
            continue;
        }
        if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n') {
            i += 2;
            continue;
        }
        row.fill(kMissing);
        bool have_type = false;
        for (std::size_t c = 0; c < n_cols; ++c) {
            const CsvRole& role = roles[c];
            const bool last = c + 1 == n_cols;
            const char* start = text + i;
            std::size_t flen = 0;
            bool quoted = false;
            if (i < len && text[i] == '"') {
                quoted = true;
                ++i;
                // the closing quote; a doubled quote inside makes the field's text a copy with one quote each
                const char* q = static_cast<const char*>(std::memchr(text + i, '"', len - i));
                if (q == nullptr) return false;  // an unterminated quote
                std::size_t close = static_cast<std::size_t>(q - text);
                if (close + 1 < len && text[close + 1] == '"') {
                    unquoted.assign(text + i, close - i);
                    std::size_t j = close;
                    for (;;) {  // at a quote: doubled (one quote of text) or closing
                        if (j + 1 < len && text[j + 1] == '"') {
                            unquoted.push_back('"');
                            j += 2;
                            const char* r = static_cast<const char*>(std::memchr(text + j, '"', len - j));
                            if (r == nullptr) return false;
                            const std::size_t next = static_cast<std::size_t>(r - text);
                            unquoted.append(text + j, next - j);
                            j = next;
                            continue;
                        }
                        break;
                    }
                    start = unquoted.data();
                    flen = unquoted.size();
                    i = j + 1;
                } else {
                    start = text + i;
                    flen = close - i;
                    i = close + 1;
                }
            } else {
                const char* p = text + i;
                const std::size_t rest = len - i;
                std::size_t k = 0;
                while (k < rest && !kStop[static_cast<unsigned char>(p[k])]) ++k;
                if (k < rest && p[k] == '"') return false;  // a quote inside an unquoted field
                flen = k;
                i += k;
            }
            // the field's end: a comma before the last column, a line end after it
            if (last) {
                if (i < len && text[i] == '\r') {
                    if (i + 1 >= len || text[i + 1] != '\n') return false;
                    ++i;
                }
                if (i < len && text[i] != '\n') return false;
                ++i;  // past the newline (or the end)
            } else {
                if (i >= len || text[i] != ',') return false;
                ++i;
            }
            switch (role.kind) {
                case CsvRole::Kind::Skip: break;
                case CsvRole::Kind::Arch:
                    if (flen == 0) return false;  // empty: an error the general reader names
                    push(&out->arch, start, flen);
                    break;
                case CsvRole::Kind::Layer: push(&out->layer, start, flen); break;
                case CsvRole::Kind::Extra: push(&out->extras[role.extra], start, flen); break;
                case CsvRole::Kind::Type: {
                    const int code = lookup(start, flen, types);
                    if (code < 0) return false;
                    row[kType] = code;
                    have_type = true;
                    break;
                }
                case CsvRole::Kind::DType: {
                    if (flen == 0) break;
                    const int code = lookup(start, flen, dtypes);
                    if (code < 0) return false;
                    row[role.field] = code;
                    break;
                }
                case CsvRole::Kind::Int: {
                    if (flen == 0 && !quoted) break;
                    std::int64_t v;
                    if (quoted || !parse_int(start, flen, &v)) return false;
                    row[role.field] = v;
                    if (role.field2 >= 0) row[role.field2] = v;
                    break;
                }
            }
        }
        if (!have_type) return false;
        for (int j = 0; j < k; ++j) key[j] = row[given[j]];
        const bool cached = ids.use();
        const std::uint64_t h = cached ? RowCache<std::int32_t>::hash(key.data(), k) : 0;
        if (const std::int32_t* hit = cached ? ids.find(key.data(), h) : nullptr) {
            out->index.push_back(*hit);
        } else {
            if (prepare(row.data())) return false;  // an invalid row: the general reader names it
            const auto id = static_cast<std::int32_t>(out->rows.size() / kNumFields);
            out->rows.insert(out->rows.end(), row.begin(), row.end());
            out->index.push_back(id);
            if (cached) ids.insert(key.data(), h, id);
        }
        ++out->n;
    }
    return true;
}

}  // namespace neuralpower
