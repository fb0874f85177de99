// A bounded map from layer rows (their exact 64-bit fields) to what was computed from them.
//
// Tables of candidate architectures repeat the same layer configurations many times over (a search space has
// far fewer distinct layers than candidates x depth): a row equal to one already seen gets the same result
// without computing it again. When full it starts over, so memory stays bounded. Where rows hardly repeat
// (under 1 in 20 of a window found), it stands aside for a while, costing nothing, then tries again. One per
// thread.
//
// Plain C++17, no Python headers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "neuralpower/layer.hpp"

namespace neuralpower {

template <typename Value>
class RowCache {
public:
    // Keys are `key_len` integers: a whole layer row by default, or fewer (the fields a table gives, the others
    // being the same for every row).
    explicit RowCache(int key_len = kNumFields) : key_len_(key_len) {}

    static std::uint64_t hash(const std::int64_t* row) { return hash(row, kNumFields); }

    static std::uint64_t hash(const std::int64_t* row, int len) {
        // four independent lanes (one field's multiplication does not wait on the previous field's), mixed
        std::uint64_t h[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull,
                              0x082EFA98EC4E6C89ull};
        int f = 0;
        for (; f + 4 <= len; f += 4)
            for (int u = 0; u < 4; ++u) h[u] = (h[u] ^ static_cast<std::uint64_t>(row[f + u])) * 0x9E3779B97F4A7C15ull;
        for (; f < len; ++f) h[0] = (h[0] ^ static_cast<std::uint64_t>(row[f])) * 0x9E3779B97F4A7C15ull;
        std::uint64_t x = h[0] ^ (h[1] >> 17 | h[1] << 47) ^ (h[2] >> 31 | h[2] << 33) ^ (h[3] >> 47 | h[3] << 17);
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        return x ^ (x >> 32);
    }

    // Whether to look the next row up (false while standing aside).
    bool use() {
        if (resting_ > 0) {
            --resting_;
            return false;
        }
        if (lookups_ >= kWindow) {
            if (hits_ * 20 < lookups_) resting_ = kRest;
            lookups_ = hits_ = 0;
            return resting_ == 0;
        }
        return true;
    }

    // The value cached for `row` (whose hash is `h`), or null.
    const Value* find(const std::int64_t* row, std::uint64_t h) {
        ++lookups_;
        const Value* found = lookup(row, h);
        hits_ += found != nullptr;
        return found;
    }

    const Value* lookup(const std::int64_t* row, std::uint64_t h) const {
        return lookup_if(h, [&](const std::int64_t* key) { return std::equal(row, row + key_len_, key); });
    }

    // find, for a key held elsewhere than in one array: same(stored key) says whether a stored key is it.
    template <typename Same>
    const Value* find_if(std::uint64_t h, Same same) {
        ++lookups_;
        const Value* found = lookup_if(h, same);
        hits_ += found != nullptr;
        return found;
    }

    template <typename Same>
    const Value* lookup_if(std::uint64_t h, Same same) const {
        if (slot_.empty()) return nullptr;
        const std::size_t mask = slot_.size() - 1;
        for (std::size_t s = h & mask;; s = (s + 1) & mask) {
            const std::int32_t e = slot_[s];
            if (e < 0) return nullptr;
            if (hash_[e] == h && same(keys_.data() + static_cast<std::size_t>(e) * key_len_)) return &values_[e];
        }
    }

    void insert(const std::int64_t* row, std::uint64_t h, const Value& value) {
        if (values_.size() >= kMaxEntries || slot_.empty()) {  // full (or first use): start over
            slot_.assign(2 * kMaxEntries, -1);
            hash_.clear();
            keys_.clear();
            values_.clear();
        }
        const std::size_t mask = slot_.size() - 1;
        std::size_t s = h & mask;
        while (slot_[s] >= 0) s = (s + 1) & mask;
        slot_[s] = static_cast<std::int32_t>(values_.size());
        hash_.push_back(h);
        keys_.insert(keys_.end(), row, row + key_len_);
        values_.push_back(value);
    }

private:
    static constexpr std::size_t kMaxEntries = std::size_t{1} << 14;  // distinct rows kept (slots: twice that)
    static constexpr std::size_t kWindow = std::size_t{1} << 14;      // lookups judged at a time
    static constexpr std::size_t kRest = std::size_t{1} << 18;        // rows skipped when they hardly repeat
    int key_len_;
    std::size_t lookups_ = 0, hits_ = 0, resting_ = 0;
    std::vector<std::int32_t> slot_;                                  // -1: empty; else an entry's index
    std::vector<std::uint64_t> hash_;
    std::vector<std::int64_t> keys_;  // key_len_ per entry
    std::vector<Value> values_;
};

}  // namespace neuralpower
