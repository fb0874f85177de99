// A compiled runtime and power model, and its evaluation over layers and architectures.
//
// The model file (JSON) is parsed and validated in Python (neuralpower.models.format); the bindings hand
// its numbers to a ModelBuilder, which checks every index again, so that no model can make the evaluator
// read out of bounds or loop. Evaluation follows neuralpower.models.predict (the NumPy reference) exactly:
// the same features (layer.hpp), the same term order, predictions clipped at zero (NaN where they overflow).
//
// Plain C++17, no Python headers.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "neuralpower/layer.hpp"
#include "neuralpower/row_cache.hpp"

namespace neuralpower {

enum class ModelKind : int { None = 0, Poly, Tree, Roofline, FlopsLinear, Constant, Boosted };
enum class PolyTarget : int { Plain = 0, Relative, Log };
enum class Transform : int { Identity = 0, Log1p };
enum class TreeTest : int { Leaf = 0, Le, Mod };

constexpr int kMaxExponent = 8;
constexpr std::size_t kMaxBlendMembers = 64;

// One model of one layer type and target, in flat arrays.
struct SubModel {
    ModelKind kind = ModelKind::None;
    // poly
    PolyTarget target = PolyTarget::Plain;
    std::vector<int> input_feature;      // per input: feature index
    std::vector<int> input_transform;    // per input: Transform
    double intercept = 0.0;
    std::vector<int> term_start;         // per term: offset into term_input/term_exp; size terms + 1
    std::vector<int> term_input;
    std::vector<int> term_exp;
    std::vector<double> coef;
    int max_exp = 1;
    // Fast path when every term has at most kFactors factors (any polynomial of degree <= 4): each term is
    // kFactors indices into the table of input powers, padded with the slot that holds 1.0.
    static constexpr int kFactors = 4;
    std::vector<int> term_slots;  // kFactors per term; empty when some term has more factors
    std::size_t scratch_size() const { return input_feature.size() * static_cast<std::size_t>(max_exp) + 1; }
    // tree: nodes in pre-order, children after their parent
    std::vector<int> leaf_features;
    std::vector<int> node_feature, node_test, node_yes, node_no;
    std::vector<double> node_value, node_intercept, node_weights;  // weights: leaf_features.size() per node
    // boosted (gradient-boosted trees): c + the sum of its trees' leaves, exp() of it for a log target; the trees'
    // nodes in node_feature/node_value/node_yes/node_no (a split's threshold or a leaf's value in node_value), tree i
    // rooted at node tree_root[i], children after their parent within their tree
    std::vector<int> tree_root;
    // roofline: a flops + b bytes_moved + c; flops_linear: a flops + c; constant: c
    double a = 0.0, b = 0.0, c = 0.0;

    double eval(const double* features, double* scratch) const;
};

// A target's prediction interval by group: nodes root first, children after their parent; a split node i sends a
// layer to yes[i] when its feature[i] <= value[i], else to no[i]; a leaf (feature -1) holds the group's factors.
struct IntervalGroups {
    std::vector<int> feature, yes, no;
    std::vector<double> value, lo, hi;
    bool empty() const { return feature.empty(); }
    // the leaf a layer of features `f` falls in
    std::uint8_t leaf(const double* f) const {
        int i = 0;
        while (feature[static_cast<std::size_t>(i)] >= 0) {
            const auto k = static_cast<std::size_t>(i);
            i = f[feature[k]] <= value[k] ? yes[k] : no[k];
        }
        return static_cast<std::uint8_t>(i);
    }
};

// The interval targets, in the order of set_interval's `target` and of a layer's factors (lo, hi each).
enum IntervalTarget { kIntervalRuntime, kIntervalPower, kIntervalEnergy, kIntervalTargets };

struct TypeModel {
    bool present = false;
    SubModel runtime, power;
    // Prediction interval of each target: measured / predicted lay in [lo, hi] for the interval's coverage of
    // held-out rows (NaN: the model has none). Energy's own, calibrated on configurations with both measured; where
    // it has none, the products of runtime's and power's (see factor).
    double runtime_lo = kNoBound, runtime_hi = kNoBound, power_lo = kNoBound, power_hi = kNoBound;
    double energy_lo = kNoBound, energy_hi = kNoBound;
    // groups with factors of their own (see IntervalGroups; empty: the type's factors hold for every layer)
    std::array<IntervalGroups, kIntervalTargets> groups;
    // A layer's factor of a target (lo or hi) in group `leaf` of that target; energy's without an interval of its
    // own: the products of runtime's and power's.
    double factor(int target, bool hi, const std::uint8_t* leaf) const {
        const IntervalGroups& g = groups[static_cast<std::size_t>(target)];
        if (!g.empty()) return (hi ? g.hi : g.lo)[leaf[target]];
        if (target == kIntervalRuntime) return hi ? runtime_hi : runtime_lo;
        if (target == kIntervalPower) return hi ? power_hi : power_lo;
        const double own = hi ? energy_hi : energy_lo;
        return std::isnan(own) ? factor(kIntervalRuntime, hi, leaf) * factor(kIntervalPower, hi, leaf) : own;
    }
    static constexpr double kNoBound = std::numeric_limits<double>::quiet_NaN();
    std::vector<int> range_feature;
    std::vector<double> range_lo, range_hi;
    // Each target's prediction, its part above `scale_from` times `scale` (a model carried over from another GPU,
    // dtype or layer type, scaled by what tells them apart; a launch overhead below `scale_from` does not scale),
    // then kept within [min, max] (power between a GPU's idle and its limit).
    double runtime_scale = 1.0, power_scale = 1.0;
    double runtime_scale_from = 0.0, power_scale_from = 0.0;  // only the part above this is scaled
    double runtime_min = 0.0, power_min = 0.0;
    double runtime_max = std::numeric_limits<double>::infinity(), power_max = std::numeric_limits<double>::infinity();
    // A launch floor (a layer launched on its own, as PyTorch eager does, takes at least floor_ms): a layer whose
    // kernel takes r < floor_ms runs for floor_ms, drawing its power for r and floor_power_w (the GPU waiting for
    // the next launch) for the rest. 0: none.
    double floor_ms = 0.0, floor_power_w = 0.0;
    // Fit on operators laid out as rows x features (see to_rows_layout): rows are read in that layout.
    bool rows_layout = false;
    // A streaming (memory-bound) type's largest tensor its fit saw, as rows x channels (0: no limit). A layer of
    // more channels is read as more rows of stream_channels_hi channels (the same elements; only where channels
    // are not a reduction axis); one of more rows as rows of stream_rows_hi, its runtime times the ratio: the
    // kernel keeps the bandwidth it reached at the largest size measured, where a tree would stay flat.
    double stream_rows_hi = 0.0, stream_channels_hi = 0.0;
};

// Per-layer results of an evaluation.
struct LayerResult {
    double runtime_ms = 0.0, power_w = 0.0, energy_mj = 0.0;
    bool extrapolated = false;
    // per interval target, the group (leaf of TypeModel::groups) the layer falls in
    std::uint8_t group[kIntervalTargets] = {0, 0, 0};
};

using ResultCache = RowCache<LayerResult>;

// The sums evaluate_archs writes per architecture with `bounds`, in this order.
enum BoundSum { kRuntimeLo, kRuntimeHi, kPowerTimeLo, kPowerTimeHi, kEnergyLo, kEnergyHi, kBoundSums };

class Model {
public:
    Model();
    // Builders; each throws std::invalid_argument on an index or value that would be unsafe.
    void set_poly(int type, int target, int mode, const std::vector<int>& input_feature,
                  const std::vector<int>& input_transform, double intercept, const std::vector<int>& term_start,
                  const std::vector<int>& term_input, const std::vector<int>& term_exp,
                  const std::vector<double>& coef);
    void set_tree(int type, int target, const std::vector<int>& leaf_features, const std::vector<int>& node_feature,
                  const std::vector<int>& node_test, const std::vector<double>& node_value,
                  const std::vector<int>& node_yes, const std::vector<int>& node_no,
                  const std::vector<double>& node_intercept, const std::vector<double>& node_weights);
    // Gradient-boosted trees: `base` plus the sum of the trees' leaves (exp() of it when log_target); tree i's
    // nodes are [tree_start[i], tree_start[i + 1]) of the node arrays, its children indexed within the whole arrays;
    // a leaf (children -1) has its value in node_value, a split its threshold.
    void set_boosted(int type, int target, bool log_target, double base, const std::vector<int>& tree_start,
                     const std::vector<int>& node_feature, const std::vector<double>& node_value,
                     const std::vector<int>& node_yes, const std::vector<int>& node_no);
    void set_linear(int type, int target, int kind, double a, double b, double c);
    void set_ranges(int type, const std::vector<int>& feature, const std::vector<double>& lo,
                    const std::vector<double>& hi);
    // A target's prediction interval, as factors on the prediction: 0 <= lo <= 1 <= hi; target 0 runtime, 1 power,
    // 2 energy (without one, energy's factors are the products of runtime's and power's).
    void set_interval(int type, int target, double lo, double hi);
    // A target's interval by group (see IntervalGroups): 1 to kMaxIntervalNodes nodes, leaves 0 <= lo <= 1 <= hi.
    void set_interval_groups(int type, int target, const std::vector<int>& feature, const std::vector<double>& value,
                             const std::vector<int>& yes, const std::vector<int>& no, const std::vector<double>& lo,
                             const std::vector<double>& hi);
    static constexpr int kMaxIntervalNodes = 255;
    // A layer's six interval factors (runtime lo, hi, power lo, hi, energy lo, hi) from its row and result; NaN
    // where its type has no interval, 1 for a type the model does not cover (a free type costs nothing).
    void layer_factors(const std::int64_t* row, const LayerResult& result, double* out) const;
    // A target's scale and bounds (see TypeModel): 0 < scale, 0 <= min <= max (max may be infinite), 0 <= from.
    void set_adjust(int type, int target, double scale, double min, double max, double scale_from = 0.0);
    // A type's launch floor (see TypeModel): 0 <= ms, 0 <= power_w.
    void set_floor(int type, double ms, double power_w);
    // A type fit on operator tables of rows x features: its rows are read in that layout (see to_rows_layout).
    void set_rows_layout(int type, bool rows);
    // A streaming type's largest rows and channels measured (see TypeModel); 0: no limit.
    void set_stream(int type, double rows_hi, double channels_hi);
    // A blend: each layer is evaluated by every member covering its type, its runtime and power the geometric means of
    // theirs weighted by `weights` (renormalised over those members), extrapolated where any member extrapolates; no
    // intervals. The model's own type models are then unused. Members are copied (at most kMaxBlendMembers); none may
    // be a blend itself; every weight is a positive finite number (only their ratios count).
    void set_blend(const std::vector<Model>& members, const std::vector<double>& weights);
    bool has_intervals() const { return has_intervals_; }
    // Different for every model and after every change to one (results kept for one version serve it only).
    std::uint64_t version() const { return version_; }
    // Marks a type as covered once both its targets are set.
    bool covers(LayerType t) const { return types_[static_cast<int>(t)].present; }
    void finish();

    // Evaluates n prepared (validated) layer rows. Returns the index of the first row whose type the
    // model does not cover (free types such as flatten cost nothing), or -1. With `invalid`, every row is
    // validated as it is evaluated (rows from outside): the first invalid row's index is returned and its
    // error written to *invalid.
    // A cache, when given, is consulted and filled (rows equal to a cached one are neither validated nor
    // evaluated again: the same row, the same outcome).
    std::ptrdiff_t evaluate(const std::int64_t* rows, std::size_t n, LayerResult* out,
                            ValidationError* invalid = nullptr, ResultCache* cache = nullptr) const;

    // Evaluates architectures laid out as consecutive rows: architecture k is rows [offsets[k], offsets[k+1]).
    // Totals per architecture: runtime, energy, power = energy / runtime, the index (within the
    // architecture) of the layer with the most energy and that layer's energy and runtime (so that totals of
    // an architecture split over several calls can be merged), and the number of extrapolated layers.
    // Per-layer results are written when layers is not null. With `bounds` (kBoundSums per architecture), the sums
    // of the layers' interval bounds are written (see BoundSum): runtime lo and hi; the layers' power bounds times
    // their predicted runtime, lo and hi (over the predicted runtime, the network's power bounds: they hold its
    // predicted power); energy lo and hi. NaN where a layer's type has no interval.
    // Splits the work over `threads` threads (>= 1).
    // With `index`, `rows` holds `n_rows` distinct rows and the table's layer j is rows[index[j]] (each index
    // in [0, n_rows)): each distinct row is evaluated once, through `cache` when given (one that lives across
    // calls, as blocks of one table repeat rows: then in one thread). Returned indices are the table's.
    std::ptrdiff_t evaluate_archs(const std::int64_t* rows, const std::int64_t* offsets, std::size_t n_archs,
                                  double* runtime_ms, double* power_w, double* energy_mj, std::int64_t* bottleneck,
                                  double* bottleneck_energy_mj, double* bottleneck_runtime_ms,
                                  std::int64_t* extrapolated, LayerResult* layers, int threads,
                                  ValidationError* invalid = nullptr, double* bounds = nullptr,
                                  const std::int64_t* index = nullptr, std::size_t n_rows = 0,
                                  ResultCache* cache = nullptr) const;

private:
    SubModel& sub(int type, int target);
    std::array<TypeModel, kNumLayerTypes> types_;
    std::array<bool, kNumLayerTypes> has_runtime_{}, has_power_{};
    std::vector<Model> blend_;
    std::vector<double> blend_weight_;
    LayerResult blend_row(const std::int64_t* row, int type) const;
    bool has_intervals_ = false;
    std::uint64_t version_ = 0;
};

// Layer types that cost nothing when a model does not cover them (a view).
bool is_free_type(LayerType t);

}  // namespace neuralpower
