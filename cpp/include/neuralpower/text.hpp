// Lines of text made from columns, for the command line's listings of millions of layers.
//
// Each line is its columns back to back: literal text, integers (in decimal), strings or strings picked from a
// dictionary by index, each optionally padded to a width (counted in code points, as Python's str.format
// counts) on the left or the right; then, optionally without its trailing spaces, the line's end.
//
// Plain C++17, no Python headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace neuralpower {

struct TextColumn {
    enum class Kind { Literal, Int, Str, Dict } kind = Kind::Literal;
    std::string literal;                 // Literal
    const std::int64_t* ints = nullptr;  // Int: one per row
    const std::int32_t* offsets = nullptr;  // Str: n + 1 offsets into data; Dict: the dictionary's
    const std::uint8_t* data = nullptr;
    const std::int32_t* indices = nullptr;  // Dict: one per row
    int width = 0;                          // pad to this many code points (0: none)
    bool right = false;                     // pad on the left (right-aligned)
};

// Appends n lines to *out. Every line but the last ends in `end`, the last in `last_end`; with rstrip,
// the spaces a line ends with are dropped before its end.
void join_lines(const std::vector<TextColumn>& columns, std::size_t n, const std::string& end,
                const std::string& last_end, bool rstrip, std::string* out);

}  // namespace neuralpower
