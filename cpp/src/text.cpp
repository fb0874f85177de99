#include "neuralpower/text.hpp"

#include <charconv>

namespace neuralpower {

namespace {

std::size_t code_points(const std::uint8_t* s, std::size_t len) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < len; ++i) n += (s[i] & 0xC0) != 0x80;
    return n;
}

void padded(std::string* out, const char* s, std::size_t len, std::size_t points, int width, bool right) {
    const std::size_t pad = width > 0 && static_cast<std::size_t>(width) > points ? width - points : 0;
    if (right) out->append(pad, ' ');
    out->append(s, len);
    if (!right) out->append(pad, ' ');
}

}  // namespace

void join_lines(const std::vector<TextColumn>& columns, std::size_t n, const std::string& end,
                const std::string& last_end, bool rstrip, std::string* out) {
    char digits[24];
    for (std::size_t i = 0; i < n; ++i) {
        for (const TextColumn& c : columns) {
            switch (c.kind) {
                case TextColumn::Kind::Literal: out->append(c.literal); break;
                case TextColumn::Kind::Int: {
                    const auto r = std::to_chars(digits, digits + sizeof digits, c.ints[i]);
                    const std::size_t len = static_cast<std::size_t>(r.ptr - digits);
                    padded(out, digits, len, len, c.width, c.right);
                    break;
                }
                case TextColumn::Kind::Str:
                case TextColumn::Kind::Dict: {
                    const std::size_t k = c.kind == TextColumn::Kind::Str ? i : static_cast<std::size_t>(c.indices[i]);
                    const std::uint8_t* s = c.data + c.offsets[k];
                    const std::size_t len = static_cast<std::size_t>(c.offsets[k + 1] - c.offsets[k]);
                    padded(out, reinterpret_cast<const char*>(s), len, c.width > 0 ? code_points(s, len) : len,
                           c.width, c.right);
                    break;
                }
            }
        }
        if (rstrip)
            while (!out->empty() && out->back() == ' ') out->pop_back();
        out->append(i + 1 < n ? end : last_end);
    }
}

}  // namespace neuralpower
