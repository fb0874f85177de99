// The only file that includes pybind11: thin wrappers that move NumPy arrays in and out of the plain
// C++ core. Batch entry points take contiguous arrays so that one call handles a million layers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <thread>
#include <string>
#include <tuple>
#include <vector>

#include "neuralpower/layer.hpp"
#include "neuralpower/model.hpp"
#include "neuralpower/csv.hpp"
#include "neuralpower/text.hpp"

namespace py = pybind11;
namespace np = neuralpower;

namespace {

using RowsIn = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

std::size_t check_rows(const py::array& rows, py::ssize_t width, const char* what) {
    if (rows.ndim() != 2 || rows.shape(1) != width)
        throw std::invalid_argument(std::string(what) + " must be a 2-D array with " + std::to_string(width) +
                                    " columns");
    return static_cast<std::size_t>(rows.shape(0));
}

template <std::size_t N>
std::vector<std::string> names(const std::array<const char*, N>& a) {
    return std::vector<std::string>(a.begin(), a.end());
}

np::LayerType layer_type(int code) {
    if (code < 0 || code >= np::kNumLayerTypes) throw std::invalid_argument("unknown layer type code");
    return static_cast<np::LayerType>(code);
}

// Normalizes and validates rows in place; returns (row, field, message) of the first bad row, or
// (-1, -1, "").
std::tuple<py::ssize_t, int, std::string> prepare(py::array_t<std::int64_t> rows) {
    if (!(rows.flags() & py::array::c_style) || !rows.writeable())
        throw std::invalid_argument("rows must be a writeable C-contiguous int64 array");
    const std::size_t n = check_rows(rows, np::kNumFields, "rows");
    np::ValidationError err;
    std::ptrdiff_t bad;
    std::int64_t* data = rows.mutable_data();
    {
        py::gil_scoped_release release;
        bad = np::prepare_rows(data, n, &err);
    }
    if (bad < 0) return {-1, -1, std::string()};
    return {bad, err.field, err.message};
}

using IdCache = np::RowCache<std::int32_t>;

// A key's hash made column by column: start from kHashSeed, mix in each value, then finish.
constexpr std::uint64_t kHashSeed = 0x243F6A8885A308D3ull;
inline std::uint64_t hash_mix(std::uint64_t h, std::int64_t v) {
    return (h ^ static_cast<std::uint64_t>(v)) * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}
inline std::uint64_t hash_finish(std::uint64_t x) {
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

// Distinct rows made in parts (each part's own, in order), back to back, and each part's ids moved past the rows
// of the parts before it: part p numbered the entries index[ranges[p].first, ranges[p].second) from 0.
py::array_t<std::int64_t> joined_distinct(const std::vector<const std::vector<std::int64_t>*>& parts,
                                          std::int64_t* index,
                                          const std::vector<std::pair<std::size_t, std::size_t>>& ranges) {
    std::size_t total = 0;
    for (const auto* d : parts) total += d->size();
    py::array_t<std::int64_t> out(
        std::vector<py::ssize_t>{static_cast<py::ssize_t>(total / np::kNumFields), np::kNumFields});
    std::int64_t* to = out.mutable_data();
    std::int64_t base = 0;
    for (std::size_t p = 0; p < parts.size(); ++p) {
        to = std::copy(parts[p]->begin(), parts[p]->end(), to);
        if (base != 0)
            for (std::size_t i = ranges[p].first; i < ranges[p].second; ++i) index[i] += base;
        base += static_cast<std::int64_t>(parts[p]->size() / np::kNumFields);
    }
    return out;
}

// Builds rows from one array per field (None: every row leaves the field empty; a tuple (values, validity,
// offset): an Arrow column, whose values are empty where bit offset + i of the validity bitmap is 0), then
// normalizes and validates them, in one pass over memory. A table repeats rows: each distinct raw row is
// prepared once. Returns (distinct, index, bad_row, field, message): the prepared rows are distinct[index]
// (a row may appear in distinct more than once, where a cache started over); bad_row is -1 when all are valid,
// else the first bad row, its field and the message, as prepare gives them.
std::tuple<py::array_t<std::int64_t>, py::array_t<std::int64_t>, py::ssize_t, int, std::string> prepare_columns(
    const py::list& columns, py::ssize_t n, int threads) {
    if (static_cast<int>(columns.size()) != np::kNumFields)
        throw std::invalid_argument("prepare_columns needs one entry per field");
    using BitsIn = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>;
    std::vector<RowsIn> keep;
    std::vector<BitsIn> keep_bits;
    std::vector<const std::int64_t*> ptr(np::kNumFields, nullptr);
    std::vector<const std::uint8_t*> bits(np::kNumFields, nullptr);
    std::vector<py::ssize_t> bit_offset(np::kNumFields, 0);
    std::vector<char> raw(np::kNumFields, 0);  // an Arrow column (a tuple): its values are range-checked here
    constexpr std::int64_t kIntLimit = std::int64_t{1} << 62;
    for (int f = 0; f < np::kNumFields; ++f) {
        py::object column = columns[f];
        if (column.is_none()) continue;
        if (py::isinstance<py::tuple>(column)) {
            const py::tuple t = column.cast<py::tuple>();
            if (t.size() != 3) throw std::invalid_argument("a column tuple is (values, validity, offset)");
            column = t[0];
            raw[f] = 1;
            if (!t[1].is_none()) {
                keep_bits.emplace_back(BitsIn::ensure(t[1]));
                bit_offset[f] = t[2].cast<py::ssize_t>();
                if (!keep_bits.back() || keep_bits.back().ndim() != 1 || bit_offset[f] < 0 ||
                    keep_bits.back().shape(0) * 8 < bit_offset[f] + n)
                    throw std::invalid_argument("a validity bitmap must hold offset + n bits");
                bits[f] = keep_bits.back().data();
            }
        }
        keep.emplace_back(RowsIn::ensure(column));
        if (!keep.back() || keep.back().ndim() != 1 || keep.back().shape(0) != n)
            throw std::invalid_argument("each column must be a 1-D int64 array of n values");
        ptr[f] = keep.back().data();
    }
    py::array_t<std::int64_t> index_out(n);
    std::int64_t* index = index_out.mutable_data();
    // Rows are split over threads; the first bad row of the whole table is reported.
    const int n_threads = static_cast<int>(std::max<py::ssize_t>(1, std::min<py::ssize_t>(threads, n / 65536 + 1)));
    std::vector<py::ssize_t> bad_of(n_threads, -1);
    std::vector<np::ValidationError> err_of(n_threads);
    std::vector<std::vector<std::int64_t>> distinct_of(n_threads);  // each thread's prepared rows, in order
    // A row's key is the fields the table gives (every other field is empty in every row): hashing and comparing
    // those alone finds a row prepared before, whose prepared form is not made or stored again.
    // A column that gives two fields (kernel: kernel_h and kernel_w) is read and keyed once: `given` holds one
    // field per distinct column, `key_of` each given field's place in the key.
    std::vector<int> given;
    std::vector<std::pair<int, int>> key_of;  // (field, index into the key)
    for (int f = 0; f < np::kNumFields; ++f) {
        if (ptr[f] == nullptr) continue;
        int j = 0;
        while (j < static_cast<int>(given.size()) &&
               !(ptr[given[j]] == ptr[f] && bits[given[j]] == bits[f] && bit_offset[given[j]] == bit_offset[f] &&
                 raw[given[j]] == raw[f]))
            ++j;
        if (j == static_cast<int>(given.size())) given.push_back(f);
        key_of.emplace_back(f, j);
    }
    const int k = std::max<int>(1, static_cast<int>(given.size()));
    {
        py::gil_scoped_release release;
        auto work = [&](int t) {
            IdCache ids(k);
            std::vector<std::int64_t>& distinct = distinct_of[t];
            const py::ssize_t begin = n * t / n_threads, end = n * (t + 1) / n_threads;
            // A tile of rows at a time: its cells are copied column by column (each column read in order, empty
            // cells as kMissing) while each row's hash is made, then each row is looked up by its hash and
            // compared cell by cell (the tile in cache).
            constexpr py::ssize_t kTile = 128;
            std::array<std::uint64_t, kTile> hash;
            std::vector<std::int64_t> tile(given.size() * kTile);
            std::vector<std::int64_t> key(static_cast<std::size_t>(k), 0);  // k >= 1 even when no column is given
            np::LayerRow row;
            const auto cell = [&](std::size_t j, py::ssize_t i) {
                return tile[j * kTile + static_cast<std::size_t>(i)];
            };
            for (py::ssize_t t0 = begin; t0 < end; t0 += kTile) {
                const py::ssize_t t1 = std::min(end, t0 + kTile), m = t1 - t0;
                // the first cell of the tile (by row, then field) that no field can hold
                py::ssize_t far_row = t1;
                int far_field = -1;
                std::int64_t far_value = 0;
                std::fill(hash.begin(), hash.begin() + m, kHashSeed);
                for (std::size_t j = 0; j < given.size(); ++j) {
                    const int f = given[j];
                    const std::int64_t* src = ptr[f] + t0;
                    const std::uint8_t* valid = bits[f];
                    const py::ssize_t off = bit_offset[f] + t0;
                    // an Arrow column's cells are checked: no field holds a value this large, and none may meet
                    // the empty-cell marker (INT64_MIN)
                    bool far = false;
                    std::int64_t* out = tile.data() + j * kTile;
                    if (valid == nullptr) {
                        for (py::ssize_t i = 0; i < m; ++i) {
                            const std::int64_t v = src[i];
                            far |= v >= kIntLimit || v <= -kIntLimit;
                            out[i] = v;
                            hash[i] = hash_mix(hash[i], v);
                        }
                    } else {
                        for (py::ssize_t i = 0; i < m; ++i) {
                            // branch-free: whether a cell is empty follows the layer types, unpredictably
                            const auto here = static_cast<std::int64_t>((valid[(off + i) >> 3] >> ((off + i) & 7)) & 1);
                            const std::int64_t mask = -here;
                            const std::int64_t value = src[i];
                            const std::int64_t v = (value & mask) | (np::kMissing & ~mask);
                            const bool beyond = value >= kIntLimit || value <= -kIntLimit;
                            far |= static_cast<bool>(here & static_cast<std::int64_t>(beyond));
                            out[i] = v;
                            hash[i] = hash_mix(hash[i], v);
                        }
                    }
                    if (far && raw[f]) {  // the column's first such cell, if before the tile's first so far
                        for (py::ssize_t i = 0; i < m && t0 + i < far_row; ++i) {
                            const bool here = valid == nullptr || ((valid[(off + i) >> 3] >> ((off + i) & 7)) & 1);
                            const std::int64_t v = src[i];
                            if (here && (v >= kIntLimit || v <= -kIntLimit)) {
                                far_row = t0 + i;
                                far_field = f;
                                far_value = v;
                                break;
                            }
                        }
                    }
                }
                for (py::ssize_t i = t0; i < t1; ++i) {
                    if (i == far_row) {
                        err_of[t] = np::ValidationError{far_field, std::to_string(far_value) + " is out of range"};
                        bad_of[t] = i;
                        return;
                    }
                    const std::uint64_t h = hash_finish(hash[i - t0]);
                    const bool look = ids.use();
                    const std::int32_t* hit = look ? ids.find_if(h, [&](const std::int64_t* stored) {
                        for (std::size_t j = 0; j < given.size(); ++j)
                            if (stored[j] != cell(j, i - t0)) return false;
                        return true;
                    })
                                                   : nullptr;
                    if (hit != nullptr) {
                        index[i] = *hit;
                        continue;
                    }
                    for (std::size_t j = 0; j < given.size(); ++j) key[j] = cell(j, i - t0);
                    row.fill(np::kMissing);
                    for (const auto& [f, j] : key_of) row[f] = key[j];
                    np::ValidationError e = np::prepare(row.data());
                    if (e) {
                        err_of[t] = std::move(e);
                        bad_of[t] = i;
                        return;
                    }
                    const auto id = static_cast<std::int32_t>(distinct.size() / np::kNumFields);
                    distinct.insert(distinct.end(), row.begin(), row.end());
                    index[i] = id;
                    if (look) ids.insert(key.data(), h, id);
                }
            }
        };
        std::vector<std::thread> pool;
        for (int t = 1; t < n_threads; ++t) pool.emplace_back(work, t);
        work(0);
        for (auto& th : pool) th.join();
    }
    py::ssize_t bad = -1;
    np::ValidationError err;
    for (int t = 0; t < n_threads; ++t)
        if (bad_of[t] >= 0) {
            bad = bad_of[t];
            err = err_of[t];
            break;
        }
    if (bad >= 0) return {py::array_t<std::int64_t>(std::vector<py::ssize_t>{0, np::kNumFields}), index_out, bad,
                          err.field, err.message};
    std::vector<const std::vector<std::int64_t>*> parts;
    std::vector<std::pair<std::size_t, std::size_t>> ranges;
    for (int t = 0; t < n_threads; ++t) {
        parts.push_back(&distinct_of[t]);
        ranges.emplace_back(static_cast<std::size_t>(n * t / n_threads),
                            static_cast<std::size_t>(n * (t + 1) / n_threads));
    }
    return {joined_distinct(parts, index, ranges), index_out, -1, -1, std::string()};
}

py::array_t<std::int64_t> info(const RowsIn& rows) {
    const std::size_t n = check_rows(rows, np::kNumFields, "rows");
    py::array_t<std::int64_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(np::kNumInfo)});
    const std::int64_t* in = rows.data();
    std::int64_t* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        np::compute_info_rows(in, n, o);
    }
    return out;
}

py::array_t<double> features(const RowsIn& rows, const RowsIn& info_rows) {
    const std::size_t n = check_rows(rows, np::kNumFields, "rows");
    if (check_rows(info_rows, np::kNumInfo, "info") != n)
        throw std::invalid_argument("rows and info must have the same number of rows");
    py::array_t<double> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(np::kNumFeatures)});
    const std::int64_t* r = rows.data();
    const std::int64_t* i = info_rows.data();
    double* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        np::compute_feature_rows(r, i, n, o);
    }
    return out;
}

void bind_layers(py::module_& m) {
    m.attr("FIELD_NAMES") = names(np::field_names());
    m.attr("TYPE_NAMES") = names(np::type_names());
    m.attr("DTYPE_NAMES") = names(np::dtype_names());
    m.attr("INFO_NAMES") = names(np::info_names());
    m.attr("FEATURE_NAMES") = names(np::feature_names());
    m.attr("MISSING") = np::kMissing;
    m.def(
        "type_fields", [](int t) { return np::type_fields(layer_type(t)); },
        "Fields (indices into FIELD_NAMES) that a layer type reads.");
    m.def(
        "type_required_fields", [](int t) { return np::type_required_fields(layer_type(t)); },
        "Fields a layer type requires (no default).");
    m.def(
        "type_features", [](int t) { return np::type_features(layer_type(t)); },
        "Default model features (indices into FEATURE_NAMES) of a layer type.");
    m.def(
        "dtype_bytes", [](int d) {
            if (d < 0 || d >= np::kNumDTypes) throw std::invalid_argument("unknown dtype code");
            return np::dtype_bytes(static_cast<np::DType>(d));
        },
        "Bytes per element of a dtype code.");
    m.def("prepare", &prepare, py::arg("rows"),
          "Fill defaults and validate layer rows in place; return (row, field, message) of the first bad "
          "row or (-1, -1, '').");
    m.def("prepare_columns", &prepare_columns, py::arg("columns"), py::arg("n"), py::arg("threads") = 1,
          "Build layer rows from one int64 array (or None) per field, fill defaults and validate them; return "
          "(distinct, index, bad_row, field, message): the rows are distinct[index], bad_row -1 when all are "
          "valid.");
    m.def("info", &info, py::arg("rows"), "Output shape and counts of valid layer rows.");
    m.def("features", &features, py::arg("rows"), py::arg("info"), "Model feature vectors of valid layer rows.");
}

// Rows handed to the evaluator: their type codes checked here, so that no input can make the C++ core read
// out of bounds. With validate, the evaluator validates every row itself as it goes (one pass, the counts
// computed once), and the first invalid row is raised by invalid_row.
void check_eval_rows(const RowsIn& rows, bool validate) {
    const std::size_t n = check_rows(rows, np::kNumFields, "rows");
    if (validate) return;
    const std::int64_t* r = rows.data();
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t* row = r + i * np::kNumFields;
        if (row[np::kType] < 0 || row[np::kType] >= np::kNumLayerTypes)
            throw std::invalid_argument("row " + std::to_string(i) + ": unknown layer type code");
    }
}

[[noreturn]] void invalid_row(std::ptrdiff_t i, const np::ValidationError& e) {
    throw std::invalid_argument("row " + std::to_string(i) + ", field " + np::field_names()[e.field] + ": " +
                                e.message);
}

py::dict evaluate(const np::Model& model, const RowsIn& rows, bool validate) {
    check_eval_rows(rows, validate);
    const std::size_t n = static_cast<std::size_t>(rows.shape(0));
    std::vector<np::LayerResult> res(n);
    std::ptrdiff_t bad;
    np::ValidationError invalid;
    {
        py::gil_scoped_release release;
        bad = model.evaluate(rows.data(), n, res.data(), validate ? &invalid : nullptr);
    }
    if (invalid) invalid_row(bad, invalid);
    py::dict out;
    out["uncovered"] = bad;
    py::array_t<double> runtime(static_cast<py::ssize_t>(n)), power(static_cast<py::ssize_t>(n)),
        energy(static_cast<py::ssize_t>(n));
    py::array_t<bool> extra(static_cast<py::ssize_t>(n));
    double *pr = runtime.mutable_data(), *pp = power.mutable_data(), *pe = energy.mutable_data();
    bool* px = extra.mutable_data();
    py::array_t<double> factors({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(2 * np::kIntervalTargets)});
    double* pf = factors.mutable_data();
    double total_runtime = 0.0, total_energy = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        model.layer_factors(rows.data() + i * np::kNumFields, res[i], pf + 2 * np::kIntervalTargets * i);
        pr[i] = res[i].runtime_ms;
        pp[i] = res[i].power_w;
        pe[i] = res[i].energy_mj;
        px[i] = res[i].extrapolated;
        total_runtime += res[i].runtime_ms;
        total_energy += res[i].energy_mj;
    }
    out["total_runtime_ms"] = total_runtime;
    out["total_energy_mj"] = total_energy;
    out["runtime_ms"] = runtime;
    out["power_w"] = power;
    out["energy_mj"] = energy;
    out["extrapolated"] = extra;
    out["factors"] = factors;
    return out;
}

// set_boosted from NumPy arrays (a bundled model holds hundreds of thousands of nodes: copied as blocks, not
// converted element by element as lists would be).
using IntsIn = py::array_t<int, py::array::c_style | py::array::forcecast>;
using DoublesIn = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <typename T, typename A>
std::vector<T> to_vector(const A& a) {
    if (a.ndim() != 1) throw std::invalid_argument("node arrays must be 1-D");
    return std::vector<T>(a.data(), a.data() + a.shape(0));
}

void set_boosted_arrays(np::Model& model, int type, int target, bool log_target, double base, const IntsIn& tree_start,
                        const IntsIn& node_feature, const DoublesIn& node_value, const IntsIn& node_yes,
                        const IntsIn& node_no) {
    model.set_boosted(type, target, log_target, base, to_vector<int>(tree_start), to_vector<int>(node_feature),
                      to_vector<double>(node_value), to_vector<int>(node_yes), to_vector<int>(node_no));
}

// Results of rows evaluated before, kept across calls: of one model at a time (given another, or the same one
// changed, it starts over).
class SharedResults {
public:
    np::ResultCache& of(const np::Model& model) {
        if (version_ != model.version()) {
            cache_ = np::ResultCache();
            version_ = model.version();
        }
        return cache_;
    }

private:
    std::uint64_t version_ = 0;
    np::ResultCache cache_;
};

py::dict evaluate_archs(const np::Model& model, const RowsIn& rows, const RowsIn& offsets, bool per_layer,
                        int threads, bool validate, const py::object& index_arg, SharedResults* shared) {
    check_eval_rows(rows, validate);
    const std::size_t n_rows = static_cast<std::size_t>(rows.shape(0));
    // with an index, the layers are rows[index]
    RowsIn index;
    const bool has_index = !index_arg.is_none();
    if (has_index) {
        index = RowsIn::ensure(index_arg);
        if (!index || index.ndim() != 1) throw std::invalid_argument("index must be a 1-D array");
        const std::int64_t* ix = index.data();
        for (py::ssize_t j = 0; j < index.shape(0); ++j)
            if (ix[j] < 0 || static_cast<std::size_t>(ix[j]) >= n_rows)
                throw std::invalid_argument("index " + std::to_string(j) + " is out of the rows");
    }
    const std::size_t n = has_index ? static_cast<std::size_t>(index.shape(0)) : n_rows;
    if (offsets.ndim() != 1 || offsets.shape(0) < 1) throw std::invalid_argument("offsets must be a 1-D array");
    const std::size_t n_archs = static_cast<std::size_t>(offsets.shape(0) - 1);
    const std::int64_t* off = offsets.data();
    if (off[0] != 0 || static_cast<std::size_t>(off[n_archs]) != n)
        throw std::invalid_argument("offsets must start at 0 and end at the number of rows");
    for (std::size_t a = 0; a < n_archs; ++a)
        if (off[a + 1] < off[a]) throw std::invalid_argument("offsets must not decrease");
    const auto na = static_cast<py::ssize_t>(n_archs);
    py::array_t<double> runtime(na), power(na), energy(na), best_energy(na), best_runtime(na);
    py::array_t<std::int64_t> bottleneck(na), extrapolated(na);
    py::array_t<double> bounds({na, static_cast<py::ssize_t>(np::kBoundSums)});
    std::vector<np::LayerResult> layers(per_layer ? n : 0);
    std::ptrdiff_t bad;
    np::ValidationError invalid;
    {
        double *pr = runtime.mutable_data(), *pp = power.mutable_data(), *pe = energy.mutable_data();
        std::int64_t *pb = bottleneck.mutable_data(), *px = extrapolated.mutable_data();
        double *pbe = best_energy.mutable_data(), *pbr = best_runtime.mutable_data();
        const std::int64_t* r = rows.data();
        np::LayerResult* pl = per_layer ? layers.data() : nullptr;
        double* pbounds = bounds.mutable_data();
        py::gil_scoped_release release;
        const std::int64_t* ix = has_index ? index.data() : nullptr;
        bad = model.evaluate_archs(r, off, n_archs, pr, pp, pe, pb, pbe, pbr, px, pl, threads,
                                   validate ? &invalid : nullptr, pbounds, ix, n_rows,
                                   has_index && shared != nullptr ? &shared->of(model) : nullptr);
    }
    if (invalid) invalid_row(bad, invalid);
    py::dict out;
    out["uncovered"] = bad;
    out["runtime_ms"] = runtime;
    out["power_w"] = power;
    out["energy_mj"] = energy;
    out["bottleneck"] = bottleneck;
    out["bottleneck_energy_mj"] = best_energy;
    out["bottleneck_runtime_ms"] = best_runtime;
    out["extrapolated"] = extrapolated;
    out["bounds"] = bounds;
    if (per_layer) {
        const auto nl = static_cast<py::ssize_t>(n);
        py::array_t<double> lr(nl), lp(nl), le(nl);
        py::array_t<bool> lx(nl);
        py::array_t<double> lf({nl, static_cast<py::ssize_t>(2 * np::kIntervalTargets)});
        double *a = lr.mutable_data(), *b = lp.mutable_data(), *c = le.mutable_data(), *f = lf.mutable_data();
        bool* d = lx.mutable_data();
        const std::int64_t* ix = has_index ? index.data() : nullptr;
        for (std::size_t i = 0; i < n; ++i) {
            const std::int64_t row = ix != nullptr ? ix[i] : static_cast<std::int64_t>(i);
            model.layer_factors(rows.data() + row * np::kNumFields, layers[i], f + 2 * np::kIntervalTargets * i);
            a[i] = layers[i].runtime_ms;
            b[i] = layers[i].power_w;
            c[i] = layers[i].energy_mj;
            d[i] = layers[i].extrapolated;
        }
        out["layer_runtime_ms"] = lr;
        out["layer_power_w"] = lp;
        out["layer_energy_mj"] = le;
        out["layer_extrapolated"] = lx;
        out["layer_factors"] = lf;
    }
    return out;
}

// Lines from columns (see text.hpp). Each column is bytes (a literal) or a tuple: ("int", int64 values,
// width, right), ("str", int32 offsets, uint8 data, width, right) or ("dict", int32 indices, int32 offsets,
// uint8 data, width, right). Arrays are checked against n (and indices and offsets against their data) here.
py::bytes join_lines(const py::list& columns, py::ssize_t n, const std::string& end, const std::string& last_end,
                     bool rstrip) {
    using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
    using I32 = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;
    using U8 = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>;
    if (n < 0) throw std::invalid_argument("n must not be negative");
    std::vector<np::TextColumn> cols;
    std::vector<py::object> keep;
    const auto offsets_ok = [](const I32& off, const U8& data, py::ssize_t count) {
        if (off.ndim() != 1 || off.shape(0) < count + 1) return false;
        const std::int32_t* o = off.data();
        for (py::ssize_t k = 0; k < count; ++k)
            if (o[k] < 0 || o[k + 1] < o[k]) return false;
        return count == 0 || o[count] <= data.shape(0);
    };
    for (const py::handle item : columns) {
        np::TextColumn c;
        if (py::isinstance<py::bytes>(item)) {
            c.literal = item.cast<std::string>();
            cols.push_back(std::move(c));
            continue;
        }
        const py::tuple t = item.cast<py::tuple>();
        const std::string kind = t[0].cast<std::string>();
        if (kind == "int") {
            I64 v = I64::ensure(t[1]);
            if (!v || v.ndim() != 1 || v.shape(0) < n) throw std::invalid_argument("an int column needs n values");
            c.kind = np::TextColumn::Kind::Int;
            c.ints = v.data();
            keep.push_back(v);
        } else if (kind == "str" || kind == "dict") {
            const int base = kind == "dict" ? 2 : 1;
            I32 off = I32::ensure(t[base]);
            U8 data = U8::ensure(t[base + 1]);
            if (!off || !data || data.ndim() != 1) throw std::invalid_argument("a string column needs offsets and data");
            if (kind == "str") {
                if (!offsets_ok(off, data, n)) throw std::invalid_argument("bad string offsets");
                c.kind = np::TextColumn::Kind::Str;
            } else {
                I32 idx = I32::ensure(t[1]);
                const py::ssize_t size = off.ndim() == 1 ? off.shape(0) - 1 : -1;
                if (!idx || idx.ndim() != 1 || idx.shape(0) < n || size < 0 || !offsets_ok(off, data, size))
                    throw std::invalid_argument("bad dictionary column");
                const std::int32_t* ix = idx.data();
                for (py::ssize_t i = 0; i < n; ++i)
                    if (ix[i] < 0 || ix[i] >= size) throw std::invalid_argument("dictionary index out of range");
                c.kind = np::TextColumn::Kind::Dict;
                c.indices = ix;
                keep.push_back(idx);
            }
            c.offsets = off.data();
            c.data = data.data();
            keep.push_back(off);
            keep.push_back(data);
        } else {
            throw std::invalid_argument("unknown column kind " + kind);
        }
        c.width = t[t.size() - 2].cast<int>();
        c.right = t[t.size() - 1].cast<bool>();
        cols.push_back(std::move(c));
    }
    // a line's likely length, to reserve once: literals, digits, and each string column's mean or width
    std::size_t line = end.size();
    for (const np::TextColumn& c : cols) {
        std::size_t len = c.literal.size();
        if (c.kind == np::TextColumn::Kind::Int) len = 20;
        if (c.kind == np::TextColumn::Kind::Str && n > 0) len = static_cast<std::size_t>(c.offsets[n] - c.offsets[0]) / n + 1;
        if (c.kind == np::TextColumn::Kind::Dict) len = 16;
        line += std::max<std::size_t>(len, static_cast<std::size_t>(std::max(0, c.width)));
    }
    // rows split over threads (each writes its lines into its own buffer), then copied out back to back
    const std::size_t rows = static_cast<std::size_t>(n);
    const std::size_t n_threads = std::max<std::size_t>(
        1, std::min<std::size_t>(std::thread::hardware_concurrency(), rows / 100000 + 1));
    std::vector<std::string> parts(n_threads);
    {
        py::gil_scoped_release release;
        auto work = [&](std::size_t t) {
            const std::size_t a = rows * t / n_threads, b = rows * (t + 1) / n_threads;
            if (a == b) return;
            std::vector<np::TextColumn> shifted = cols;  // the same columns, from row a on
            for (np::TextColumn& c : shifted) {
                if (c.ints != nullptr) c.ints += a;
                if (c.kind == np::TextColumn::Kind::Str) c.offsets += a;
                if (c.indices != nullptr) c.indices += a;
            }
            parts[t].reserve((b - a) * line + 64);
            np::join_lines(shifted, b - a, end, b == rows ? last_end : end, rstrip, &parts[t]);
        };
        std::vector<std::thread> pool;
        for (std::size_t t = 1; t < n_threads; ++t) pool.emplace_back(work, t);
        work(0);
        for (auto& th : pool) th.join();
    }
    std::size_t total = 0;
    for (const std::string& p : parts) total += p.size();
    PyObject* bytes = PyBytes_FromStringAndSize(nullptr, static_cast<py::ssize_t>(total));
    if (bytes == nullptr) throw py::error_already_set();
    char* at = PyBytes_AsString(bytes);
    for (const std::string& p : parts) {
        std::copy(p.begin(), p.end(), at);
        at += p.size();
    }
    return py::reinterpret_steal<py::bytes>(bytes);
}

// Distinct rows of some columns of a row-major int64 array: (code per row, distinct rows numbered in order of
// first appearance; index of each distinct row's first appearance).
std::tuple<py::array_t<std::int32_t>, py::array_t<std::int64_t>> distinct(const RowsIn& rows,
                                                                          const std::vector<int>& columns) {
    if (rows.ndim() != 2) throw std::invalid_argument("rows must be a 2-D array");
    const py::ssize_t n = rows.shape(0), m = rows.shape(1);
    for (int c : columns)
        if (c < 0 || c >= m) throw std::invalid_argument("column index out of range");
    if (n >= (py::ssize_t{1} << 31)) throw std::invalid_argument("too many rows");
    py::array_t<std::int32_t> codes(n);
    std::vector<std::int64_t> first;
    {
        py::gil_scoped_release release;
        const std::int64_t* r = rows.data();
        std::int32_t* out = codes.mutable_data();
        const std::size_t k = columns.size();
        std::vector<std::int32_t> slot(1024, -1);
        std::vector<std::uint64_t> hashes;
        auto key_of = [&](py::ssize_t i, std::size_t j) { return r[i * m + columns[j]]; };
        for (py::ssize_t i = 0; i < n; ++i) {
            std::uint64_t h = 0x243F6A8885A308D3ull;
            for (std::size_t j = 0; j < k; ++j) {
                h = (h ^ static_cast<std::uint64_t>(key_of(i, j))) * 0x9E3779B97F4A7C15ull;
                h ^= h >> 29;
            }
            std::size_t mask = slot.size() - 1;
            std::size_t s = h & mask;
            std::int32_t found = -1;
            while (slot[s] >= 0) {
                const std::int32_t e = slot[s];
                if (hashes[e] == h) {
                    bool same = true;
                    for (std::size_t j = 0; j < k && same; ++j) same = key_of(first[e], j) == key_of(i, j);
                    if (same) {
                        found = e;
                        break;
                    }
                }
                s = (s + 1) & mask;
            }
            if (found < 0) {
                found = static_cast<std::int32_t>(first.size());
                first.push_back(i);
                hashes.push_back(h);
                slot[s] = found;
                if (2 * first.size() > slot.size()) {  // grow: rehash every entry
                    slot.assign(slot.size() * 2, -1);
                    mask = slot.size() - 1;
                    for (std::size_t e = 0; e < first.size(); ++e) {
                        std::size_t t = hashes[e] & mask;
                        while (slot[t] >= 0) t = (t + 1) & mask;
                        slot[t] = static_cast<std::int32_t>(e);
                    }
                }
            }
            out[i] = found;
        }
    }
    py::array_t<std::int64_t> firsts(static_cast<py::ssize_t>(first.size()));
    std::copy(first.begin(), first.end(), firsts.mutable_data());
    return {codes, firsts};
}

py::tuple strings_out(const np::CsvStrings& s) {
    py::array_t<std::int32_t> offsets(static_cast<py::ssize_t>(s.offsets.size()));
    std::copy(s.offsets.begin(), s.offsets.end(), offsets.mutable_data());
    py::array_t<std::uint8_t> valid(static_cast<py::ssize_t>(s.valid.size()));
    std::copy(s.valid.begin(), s.valid.end(), valid.mutable_data());
    return py::make_tuple(offsets, py::bytes(s.data), valid);
}

// The fast CSV path (csv.hpp) over byte ranges of `text` (each a run of whole records), one thread per range,
// then every row normalized and validated (repeated rows once). None when any range holds what the fast path
// does not read or any row is invalid: the caller then reads the text the general way, which names the problem.
py::object parse_csv_block(const py::buffer& text, const std::vector<std::pair<std::size_t, std::size_t>>& ranges,
                           const py::list& roles, std::size_t n_extras, const std::vector<std::string>& types,
                           const std::vector<std::string>& dtypes) {
    std::vector<np::CsvRole> rs;
    for (const py::handle item : roles) {
        const py::tuple t = item.cast<py::tuple>();
        const std::string kind = t[0].cast<std::string>();
        np::CsvRole r;
        if (kind == "skip") r.kind = np::CsvRole::Kind::Skip;
        else if (kind == "arch") r.kind = np::CsvRole::Kind::Arch;
        else if (kind == "layer") r.kind = np::CsvRole::Kind::Layer;
        else if (kind == "type") r.kind = np::CsvRole::Kind::Type;
        else if (kind == "dtype") {  // ("dtype",) fills dtype; ("dtype", field) another dtype field (kv_dtype)
            r.kind = np::CsvRole::Kind::DType;
            r.field = t.size() > 1 ? t[1].cast<int>() : static_cast<int>(np::kDType);
            if (r.field != np::kDType && r.field != np::kKvDType)
                throw std::invalid_argument("dtype role: not a dtype field");
        } else if (kind == "int") {
            r.kind = np::CsvRole::Kind::Int;
            r.field = t[1].cast<int>();
            r.field2 = t[2].cast<int>();
            if (r.field < 0 || r.field >= np::kNumFields || r.field2 < -1 || r.field2 >= np::kNumFields)
                throw std::invalid_argument("int role: field out of range");
        } else if (kind == "extra") {
            r.kind = np::CsvRole::Kind::Extra;
            r.extra = t[1].cast<int>();
            if (r.extra < 0 || static_cast<std::size_t>(r.extra) >= n_extras)
                throw std::invalid_argument("extra role: index out of range");
        } else {
            throw std::invalid_argument("unknown role " + kind);
        }
        rs.push_back(r);
    }
    if (rs.empty()) throw std::invalid_argument("no columns");
    const py::buffer_info info = text.request();
    if (info.ndim != 1 || info.itemsize != 1) throw std::invalid_argument("text must be bytes");
    const char* data = static_cast<const char*>(info.ptr);
    const py::ssize_t len = info.size;
    for (const auto& [a, b] : ranges)
        if (a > b || b > static_cast<std::size_t>(len)) throw std::invalid_argument("range out of the text");
    std::vector<np::CsvBlock> blocks(ranges.size());
    bool ok = true;
    {
        py::gil_scoped_release release;
        std::vector<char> good(ranges.size(), 1);
        auto work = [&](std::size_t k) {
            np::CsvBlock& b = blocks[k];
            if (!np::parse_csv(data + ranges[k].first, ranges[k].second - ranges[k].first, rs, n_extras, types,
                               dtypes, &b))
                good[k] = 0;
        };
        std::vector<std::thread> pool;
        for (std::size_t k = 1; k < ranges.size(); ++k) pool.emplace_back(work, k);
        if (!ranges.empty()) work(0);
        for (auto& th : pool) th.join();
        for (char g : good) ok = ok && g;
    }
    if (!ok) return py::none();
    // the ranges' results, back to back (rows copied once, into the array returned)
    std::size_t n = 0, arch_bytes = 0, layer_bytes = 0;
    for (const np::CsvBlock& b : blocks) {
        n += b.n;
        arch_bytes += b.arch.data.size();
        layer_bytes += b.layer.data.size();
    }
    if (arch_bytes > static_cast<std::size_t>(INT32_MAX) || layer_bytes > static_cast<std::size_t>(INT32_MAX))
        return py::none();
    // the ranges' distinct rows back to back, and each record's index into them
    py::array_t<std::int64_t> index(static_cast<py::ssize_t>(n));
    std::vector<const std::vector<std::int64_t>*> parts;
    std::vector<std::pair<std::size_t, std::size_t>> records;
    {
        std::int64_t* at = index.mutable_data();
        std::size_t start = 0;
        for (const np::CsvBlock& b : blocks) {
            std::copy(b.index.begin(), b.index.end(), at + start);
            parts.push_back(&b.rows);
            records.emplace_back(start, start + b.index.size());
            start += b.index.size();
        }
    }
    py::array_t<std::int64_t> rows = joined_distinct(parts, index.mutable_data(), records);
    auto joined = [&](auto pick) {
        np::CsvStrings all;
        for (const np::CsvBlock& b : blocks) {
            const np::CsvStrings& from = pick(b);
            const std::int32_t base = all.offsets.back();
            for (std::size_t i = 1; i < from.offsets.size(); ++i) all.offsets.push_back(base + from.offsets[i]);
            all.data.append(from.data);
            all.valid.insert(all.valid.end(), from.valid.begin(), from.valid.end());
        }
        return strings_out(all);
    };
    py::list extras;
    for (std::size_t j = 0; j < n_extras; ++j)
        extras.append(joined([j](const np::CsvBlock& b) -> const np::CsvStrings& { return b.extras[j]; }));
    py::dict out;
    out["rows"] = rows;
    out["index"] = index;
    out["arch"] = joined([](const np::CsvBlock& b) -> const np::CsvStrings& { return b.arch; });
    out["layer"] = joined([](const np::CsvBlock& b) -> const np::CsvStrings& { return b.layer; });
    out["extras"] = extras;
    return out;
}

void bind_model(py::module_& m) {
    m.def("parse_csv_block", &parse_csv_block, py::arg("text"), py::arg("ranges"), py::arg("roles"),
          py::arg("n_extras"), py::arg("types"), py::arg("dtypes"),
          "Plain CSV records straight into prepared layer rows (the distinct ones, 'rows', and each record's "
          "'index' into them) and name buffers, or None (read it the general way).");
    m.def("distinct", &distinct, py::arg("rows"), py::arg("columns"),
          "(code per row, first row of each code) of the distinct values of some columns, in order of first "
          "appearance.");
    m.def("join_lines", &join_lines, py::arg("columns"), py::arg("n"), py::arg("end") = "\n",
          py::arg("last_end") = "\n", py::arg("rstrip") = false,
          "Lines made of columns (literal bytes, or ('int', values, width, right), ('str', offsets, data, width, "
          "right), ('dict', indices, offsets, data, width, right)), as one bytes object.");
    py::class_<SharedResults>(m, "ResultCache",
                              "Results of rows evaluated before, kept across calls of evaluate_archs (of one model at "
                              "a time: given another, it starts over)")
        .def(py::init<>());
    py::class_<np::Model>(m, "Model", "A compiled runtime and power model (built by neuralpower.evaluator)")
        .def(py::init<>())
        .def("set_poly", &np::Model::set_poly, py::arg("type"), py::arg("target"), py::arg("mode"),
             py::arg("input_feature"), py::arg("input_transform"), py::arg("intercept"), py::arg("term_start"),
             py::arg("term_input"), py::arg("term_exp"), py::arg("coef"))
        .def("set_tree", &np::Model::set_tree, py::arg("type"), py::arg("target"), py::arg("leaf_features"),
             py::arg("node_feature"), py::arg("node_test"), py::arg("node_value"), py::arg("node_yes"),
             py::arg("node_no"), py::arg("node_intercept"), py::arg("node_weights"))
        .def("set_boosted", &set_boosted_arrays, py::arg("type"), py::arg("target"), py::arg("log_target"),
             py::arg("base"), py::arg("tree_start"), py::arg("node_feature"), py::arg("node_value"),
             py::arg("node_yes"), py::arg("node_no"))
        .def("set_linear", &np::Model::set_linear, py::arg("type"), py::arg("target"), py::arg("kind"), py::arg("a"),
             py::arg("b"), py::arg("c"))
        .def("set_ranges", &np::Model::set_ranges, py::arg("type"), py::arg("feature"), py::arg("lo"), py::arg("hi"))
        .def("set_interval", &np::Model::set_interval, py::arg("type"), py::arg("target"), py::arg("lo"),
             py::arg("hi"))
        .def("set_interval_groups", &np::Model::set_interval_groups, py::arg("type"), py::arg("target"),
             py::arg("feature"), py::arg("value"), py::arg("yes"), py::arg("no"), py::arg("lo"), py::arg("hi"))
        .def("set_adjust", &np::Model::set_adjust, py::arg("type"), py::arg("target"), py::arg("scale"),
             py::arg("min"), py::arg("max"), py::arg("scale_from") = 0.0)
        .def("set_floor", &np::Model::set_floor, py::arg("type"), py::arg("ms"), py::arg("power_w"))
        .def("set_rows_layout", &np::Model::set_rows_layout, py::arg("type"), py::arg("rows"))
        .def("set_stream", &np::Model::set_stream, py::arg("type"), py::arg("rows_hi"), py::arg("channels_hi"))
        .def("set_blend", &np::Model::set_blend, py::arg("members"), py::arg("weights"))
        .def_property_readonly("has_intervals", &np::Model::has_intervals)
        .def("finish", &np::Model::finish)
        .def(
            "covers", [](const np::Model& model, int t) { return model.covers(layer_type(t)); }, py::arg("type"))
        .def("evaluate", &evaluate, py::arg("rows"), py::arg("validate") = true,
             "Per-layer runtime_ms, power_w, energy_mj and extrapolated; 'uncovered' is the first row whose type "
             "the model lacks, or -1.")
        .def("evaluate_archs", &evaluate_archs, py::arg("rows"), py::arg("offsets"), py::arg("per_layer") = false,
             py::arg("threads") = 1, py::arg("validate") = true, py::arg("index") = py::none(),
             py::arg("cache") = nullptr,
             "Per-architecture totals (and per-layer values) of architectures laid out as "
             "rows[offsets[k]:offsets[k+1]] (with an index: as rows[index][offsets[k]:offsets[k+1]], each distinct "
             "row evaluated once, through a ResultCache when given); 'bounds' holds each architecture's sums of its "
             "layers' runtime lo, hi, power lo, hi times their predicted runtime, and energy lo, hi (NaN without "
             "intervals).");
}

}  // namespace

PYBIND11_MODULE(_evaluator, m) {
    m.doc() = "neuralpower's compiled core (private: use the neuralpower package)";
    bind_layers(m);
    bind_model(m);
}
