// A fast reader of the plain CSV layer tables that `neuralpower score` reads by the million: one pass over
// the text, fields straight into layer rows, names into string buffers.
//
// It reads what it is sure of and nothing else: integers of at most 18 digits, the known type and dtype
// names, quoted or unquoted names. Anything else (a float cell, an unknown name, a quoted number, a stray
// quote, a record with the wrong number of fields, a lone carriage return) makes it give up on the whole text,
// and the caller reads that text the general way, which also says what is wrong with it.
//
// Plain C++17, no Python headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace neuralpower {

// What one column of the file is.
struct CsvRole {
    enum class Kind { Skip, Arch, Layer, Type, DType, Int, Extra } kind = Kind::Skip;
    int field = -1, field2 = -1;  // Int: the layer field(s) it fills (a pair column such as kernel fills two);
                                  // DType: the dtype field it fills (dtype or kv_dtype)
    int extra = -1;               // Extra: which kept column
};

// Strings of one column: bytes back to back, offsets (rows + 1), and whether each is present (not empty).
struct CsvStrings {
    std::vector<std::int32_t> offsets{0};
    std::string data;
    std::vector<std::uint8_t> valid;
};

struct CsvBlock {
    std::vector<std::int64_t> rows;   // distinct prepared rows, kNumFields each
    std::vector<std::int64_t> index;  // per record: its row in `rows`
    CsvStrings arch, layer;
    std::vector<CsvStrings> extras;
    std::size_t n = 0;
};

// Parses `len` bytes of records (no header) with the given roles (one per column) into *out, each record's layer
// row prepared (defaults filled, validated: np::prepare) and stored once however often it repeats. `types` and
// `dtypes` are the known names, lowercase, in code order. Returns false when the text holds anything the fast
// path does not read, an invalid row included (then *out is unspecified).
bool parse_csv(const char* text, std::size_t len, const std::vector<CsvRole>& roles, std::size_t n_extras,
               const std::vector<std::string>& types, const std::vector<std::string>& dtypes, CsvBlock* out);

}  // namespace neuralpower
