// The only file that includes pybind11: thin wrappers that move NumPy arrays in and out of the plain
// C++ core. Batch entry points take contiguous arrays so that one call handles a million layers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "neuralpower/layer.hpp"

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
    m.def("info", &info, py::arg("rows"), "Output shape and counts of valid layer rows.");
    m.def("features", &features, py::arg("rows"), py::arg("info"), "Model feature vectors of valid layer rows.");
}

}  // namespace

PYBIND11_MODULE(_evaluator, m) {
    m.doc() = "neuralpower's compiled core (private: use the neuralpower package)";
    bind_layers(m);
}
