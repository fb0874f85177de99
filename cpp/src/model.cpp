#include "neuralpower/model.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

namespace neuralpower {

namespace {

constexpr int kRuntime = 0;
constexpr int kPower = 1;

void require(bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
}

bool finite(double v) { return std::isfinite(v); }

void check_feature(int f, const char* what) {
    require(f >= 0 && f < kNumFeatures, std::string(what) + ": feature index out of range");
}

// As the NumPy reference: clipped at 0; a prediction that overflowed (NaN, an infinity) stays NaN, so that
// the caller sees it and refuses it instead of reporting a number.
double clip(double v) {
    if (!std::isfinite(v)) return std::numeric_limits<double>::quiet_NaN();
    return v > 0.0 ? v : 0.0;
}

// A clipped prediction, its part above `from` times its scale, kept within [lo, hi]; NaN stays NaN (as the NumPy
// reference).
double adjust(double v, double scale, double lo, double hi, double from) {
    if (std::isnan(v)) return v;
    if (v > from) v = from + (v - from) * scale;
    return v < lo ? lo : (v > hi ? hi : v);
}

// log1p of the small non-negative integers that most configuration features are (channels, sizes,
// kernels, strides, batch), from a table computed with std::log1p itself: the same values, without the call.
constexpr int kLogTable = 4096;
const std::array<double, kLogTable>& log1p_table() {
    static const std::array<double, kLogTable> table = [] {
        std::array<double, kLogTable> t{};
        for (int i = 0; i < kLogTable; ++i) t[i] = std::log1p(static_cast<double>(i));
        return t;
    }();
    return table;
}

inline double fast_log1p(double v) {
    if (v >= 0.0 && v < kLogTable) {
        const int i = static_cast<int>(v);
        if (static_cast<double>(i) == v) return log1p_table()[i];
    }
    return std::log1p(v);
}

}  // namespace

bool is_free_type(LayerType t) { return t == LayerType::Flatten; }

double SubModel::eval(const double* f, double* scratch) const {
    switch (kind) {
        case ModelKind::Poly: {
            const std::size_t n_in = input_feature.size();
            // scratch holds every input's powers 1..max_exp, scratch[i * max_exp + e - 1] = v_i^e, and 1.0 last
            for (std::size_t i = 0; i < n_in; ++i) {
                double v = f[input_feature[i]];
                if (input_transform[i] == static_cast<int>(Transform::Log1p)) v = fast_log1p(v);
                double* p = scratch + i * max_exp;
                p[0] = v;
                for (int e = 1; e < max_exp; ++e) p[e] = p[e - 1] * v;
            }
            scratch[n_in * max_exp] = 1.0;
            double y = intercept;
            const std::size_t n_terms = coef.size();
            if (!term_slots.empty()) {
                // four partial sums: the additions no longer wait on each other
                const int* s = term_slots.data();
                double acc[4] = {0.0, 0.0, 0.0, 0.0};
                std::size_t j = 0;
                for (; j + 4 <= n_terms; j += 4, s += 4 * kFactors)
                    for (int u = 0; u < 4; ++u) {
                        const int* q = s + u * kFactors;
                        acc[u] += coef[j + u] * (scratch[q[0]] * scratch[q[1]] * scratch[q[2]] * scratch[q[3]]);
                    }
                for (; j < n_terms; ++j, s += kFactors)
                    acc[0] += coef[j] * (scratch[s[0]] * scratch[s[1]] * scratch[s[2]] * scratch[s[3]]);
                y += (acc[0] + acc[1]) + (acc[2] + acc[3]);
            } else {
                for (std::size_t j = 0; j < n_terms; ++j) {
                    double t = 1.0;
                    for (int k = term_start[j]; k < term_start[j + 1]; ++k)
                        t *= scratch[term_input[k] * max_exp + term_exp[k] - 1];
                    y += coef[j] * t;
                }
            }
            return target == PolyTarget::Log ? std::exp(y) : y;
        }
        case ModelKind::Tree: {
            int node = 0;
            // children always come after their parent (checked when built), so this ends
            while (node_test[node] != static_cast<int>(TreeTest::Leaf)) {
                const double x = f[node_feature[node]];
                const bool yes = node_test[node] == static_cast<int>(TreeTest::Le) ? x <= node_value[node]
                                                                                    : std::fmod(x, node_value[node]) == 0.0;
                node = yes ? node_yes[node] : node_no[node];
            }
            const std::size_t k = leaf_features.size();
            double y = node_intercept[node];
            const double* w = node_weights.data() + static_cast<std::size_t>(node) * k;
            for (std::size_t i = 0; i < k; ++i) y += f[leaf_features[i]] * w[i];
            return y;
        }
        case ModelKind::Boosted: {
            // four trees at a time: their walks do not wait on each other
            const std::size_t n_trees = tree_root.size();
            const int* feat = node_feature.data();
            const double* val = node_value.data();
            const int* yes = node_yes.data();
            const int* no = node_no.data();
            const auto walk = [&](int node) {
                while (yes[node] >= 0) node = f[feat[node]] <= val[node] ? yes[node] : no[node];
                return val[node];
            };
            double acc[4] = {0.0, 0.0, 0.0, 0.0};
            std::size_t i = 0;
            for (; i + 4 <= n_trees; i += 4)
                for (int u = 0; u < 4; ++u) acc[u] += walk(tree_root[i + u]);
            for (; i < n_trees; ++i) acc[0] += walk(tree_root[i]);
            const double y = c + ((acc[0] + acc[1]) + (acc[2] + acc[3]));
            return target == PolyTarget::Log ? std::exp(y) : y;
        }
        case ModelKind::Roofline: return a * f[kFFlops] + b * f[kFBytesMoved] + c;
        case ModelKind::FlopsLinear: return a * f[kFFlops] + c;
        case ModelKind::Constant: return c;
        case ModelKind::None: break;
    }
    return 0.0;
}

namespace {
std::atomic<std::uint64_t> next_version{1};
}  // namespace

Model::Model() : version_(next_version++) {}

SubModel& Model::sub(int type, int target) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(target == kRuntime || target == kPower, "target must be 0 (runtime) or 1 (power)");
    (target == kRuntime ? has_runtime_ : has_power_)[type] = true;
    return target == kRuntime ? types_[type].runtime : types_[type].power;
}

void Model::set_poly(int type, int target, int mode, const std::vector<int>& input_feature,
                     const std::vector<int>& input_transform, double intercept, const std::vector<int>& term_start,
                     const std::vector<int>& term_input, const std::vector<int>& term_exp,
                     const std::vector<double>& coef) {
    require(mode >= 0 && mode <= static_cast<int>(PolyTarget::Log), "poly: unknown target mode");
    require(input_feature.size() == input_transform.size(), "poly: inputs and transforms differ in length");
    for (int f : input_feature) check_feature(f, "poly input");
    for (int t : input_transform) require(t == 0 || t == 1, "poly: unknown transform");
    require(finite(intercept), "poly: intercept must be finite");
    require(term_start.size() == coef.size() + 1 && term_start.front() == 0, "poly: term offsets do not match terms");
    require(term_input.size() == term_exp.size() && static_cast<std::size_t>(term_start.back()) == term_input.size(),
            "poly: term offsets do not match powers");
    for (std::size_t j = 0; j + 1 < term_start.size(); ++j)
        require(term_start[j] <= term_start[j + 1], "poly: term offsets must not decrease");
    int max_exp = 1;
    for (std::size_t k = 0; k < term_input.size(); ++k) {
        require(term_input[k] >= 0 && static_cast<std::size_t>(term_input[k]) < input_feature.size(),
                "poly: term input index out of range");
        require(term_exp[k] >= 1 && term_exp[k] <= kMaxExponent, "poly: exponent out of range");
        max_exp = std::max(max_exp, term_exp[k]);
    }
    for (double v : coef) require(finite(v), "poly: coefficients must be finite");
    SubModel& s = sub(type, target);
    s = SubModel{};
    s.kind = ModelKind::Poly;
    s.target = static_cast<PolyTarget>(mode);
    s.input_feature = input_feature;
    s.input_transform = input_transform;
    s.intercept = intercept;
    s.term_start = term_start;
    s.term_input = term_input;
    s.term_exp = term_exp;
    s.coef = coef;
    s.max_exp = max_exp;
    // The fast path multiplies up to kFactors table entries per term, padding with the 1.0 slot. A factor
    // v^e is one entry, so the product is the same as the general loop's (the same multiplications, in
    // an order that differs by at most rounding).
    const int one = static_cast<int>(input_feature.size()) * max_exp;
    std::vector<int> slots;
    bool fits = true;
    for (std::size_t j = 0; j + 1 < term_start.size() && fits; ++j) {
        const int count = term_start[j + 1] - term_start[j];
        if (count > SubModel::kFactors) {
            fits = false;
            break;
        }
        for (int k = term_start[j]; k < term_start[j + 1]; ++k) slots.push_back(term_input[k] * max_exp + term_exp[k] - 1);
        for (int k = count; k < SubModel::kFactors; ++k) slots.push_back(one);
    }
    if (fits) s.term_slots = std::move(slots);
}

void Model::set_tree(int type, int target, const std::vector<int>& leaf_features, const std::vector<int>& node_feature,
                     const std::vector<int>& node_test, const std::vector<double>& node_value,
                     const std::vector<int>& node_yes, const std::vector<int>& node_no,
                     const std::vector<double>& node_intercept, const std::vector<double>& node_weights) {
    const std::size_t n = node_test.size();
    require(n > 0, "tree: no nodes");
    require(node_feature.size() == n && node_value.size() == n && node_yes.size() == n && node_no.size() == n &&
                node_intercept.size() == n && node_weights.size() == n * leaf_features.size(),
            "tree: node arrays differ in length");
    for (int f : leaf_features) check_feature(f, "tree leaf");
    for (std::size_t i = 0; i < n; ++i) {
        const int t = node_test[i];
        require(t >= 0 && t <= static_cast<int>(TreeTest::Mod), "tree: unknown test");
        if (t == static_cast<int>(TreeTest::Leaf)) {
            require(finite(node_intercept[i]), "tree: leaf intercept must be finite");
            for (std::size_t k = 0; k < leaf_features.size(); ++k)
                require(finite(node_weights[i * leaf_features.size() + k]), "tree: leaf weights must be finite");
            continue;
        }
        check_feature(node_feature[i], "tree split");
        require(finite(node_value[i]), "tree: split value must be finite");
        if (t == static_cast<int>(TreeTest::Mod)) require(node_value[i] >= 1.0, "tree: mod value must be >= 1");
        const auto child_ok = [&](int c) { return c > static_cast<int>(i) && static_cast<std::size_t>(c) < n; };
        require(child_ok(node_yes[i]) && child_ok(node_no[i]), "tree: children must follow their parent");
    }
    SubModel& s = sub(type, target);
    s = SubModel{};
    s.kind = ModelKind::Tree;
    s.leaf_features = leaf_features;
    s.node_feature = node_feature;
    s.node_test = node_test;
    s.node_value = node_value;
    s.node_yes = node_yes;
    s.node_no = node_no;
    s.node_intercept = node_intercept;
    s.node_weights = node_weights;
}

void Model::set_boosted(int type, int target, bool log_target, double base, const std::vector<int>& tree_start,
                        const std::vector<int>& node_feature, const std::vector<double>& node_value,
                        const std::vector<int>& node_yes, const std::vector<int>& node_no) {
    const std::size_t n = node_feature.size();
    require(finite(base), "boosted: base must be finite");
    require(node_value.size() == n && node_yes.size() == n && node_no.size() == n,
            "boosted: node arrays differ in length");
    require(tree_start.size() >= 2 && tree_start.front() == 0 && static_cast<std::size_t>(tree_start.back()) == n,
            "boosted: tree offsets do not match the nodes");
    for (std::size_t t = 0; t + 1 < tree_start.size(); ++t) {
        const int lo = tree_start[t], hi = tree_start[t + 1];
        require(lo < hi, "boosted: a tree without nodes");
        for (int i = lo; i < hi; ++i) {
            if (node_yes[i] < 0) {  // a leaf: both children -1
                require(node_no[i] < 0 && finite(node_value[i]), "boosted: a leaf needs a finite value and no children");
                continue;
            }
            check_feature(node_feature[i], "boosted split");
            require(finite(node_value[i]), "boosted: split value must be finite");
            const auto child_ok = [&](int c) { return c > i && c < hi; };
            require(child_ok(node_yes[i]) && child_ok(node_no[i]), "boosted: children must follow their parent");
        }
    }
    SubModel& s = sub(type, target);
    s = SubModel{};
    s.kind = ModelKind::Boosted;
    s.target = log_target ? PolyTarget::Log : PolyTarget::Plain;
    s.c = base;
    s.tree_root.assign(tree_start.begin(), tree_start.end() - 1);
    s.node_feature = node_feature;
    s.node_value = node_value;
    s.node_yes = node_yes;
    s.node_no = node_no;
    // a leaf's feature is never read; keep it a valid index anyway
    for (std::size_t i = 0; i < n; ++i)
        if (s.node_yes[i] < 0) s.node_feature[i] = 0;
}

void Model::set_linear(int type, int target, int kind, double a, double b, double c) {
    require(kind == static_cast<int>(ModelKind::Roofline) || kind == static_cast<int>(ModelKind::FlopsLinear) ||
                kind == static_cast<int>(ModelKind::Constant),
            "linear: kind must be roofline, flops_linear or constant");
    require(finite(a) && finite(b) && finite(c), "linear: parameters must be finite");
    SubModel& s = sub(type, target);
    s = SubModel{};
    s.kind = static_cast<ModelKind>(kind);
    s.a = a;
    s.b = b;
    s.c = c;
}

void Model::set_ranges(int type, const std::vector<int>& feature, const std::vector<double>& lo,
                       const std::vector<double>& hi) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(feature.size() == lo.size() && lo.size() == hi.size(), "ranges: arrays differ in length");
    for (int f : feature) check_feature(f, "range");
    TypeModel& t = types_[type];
    t.range_feature = feature;
    t.range_lo = lo;
    t.range_hi = hi;
}

void Model::set_interval(int type, int target, double lo, double hi) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(target >= 0 && target < kIntervalTargets, "target must be 0 (runtime), 1 (power) or 2 (energy)");
    require(finite(lo) && finite(hi) && lo >= 0.0 && lo <= 1.0 && hi >= 1.0, "interval: need 0 <= lo <= 1 <= hi");
    TypeModel& t = types_[type];
    (target == kIntervalRuntime ? t.runtime_lo : target == kIntervalPower ? t.power_lo : t.energy_lo) = lo;
    (target == kIntervalRuntime ? t.runtime_hi : target == kIntervalPower ? t.power_hi : t.energy_hi) = hi;
    has_intervals_ = true;
}

void Model::set_interval_groups(int type, int target, const std::vector<int>& feature,
                                const std::vector<double>& value, const std::vector<int>& yes,
                                const std::vector<int>& no, const std::vector<double>& lo,
                                const std::vector<double>& hi) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(target >= 0 && target < kIntervalTargets, "target must be 0 (runtime), 1 (power) or 2 (energy)");
    const std::size_t n = feature.size();
    require(n >= 1 && n <= static_cast<std::size_t>(kMaxIntervalNodes), "interval groups: 1 to 255 nodes");
    require(value.size() == n && yes.size() == n && no.size() == n && lo.size() == n && hi.size() == n,
            "interval groups: node arrays of one length");
    for (std::size_t i = 0; i < n; ++i) {
        const int at = static_cast<int>(i);
        if (feature[i] < 0) {
            require(feature[i] == -1 && yes[i] == -1 && no[i] == -1, "interval groups: a leaf has no children");
            require(finite(lo[i]) && finite(hi[i]) && lo[i] >= 0.0 && lo[i] <= 1.0 && hi[i] >= 1.0,
                    "interval groups: need 0 <= lo <= 1 <= hi");
        } else {
            require(feature[i] < kNumFeatures, "interval groups: feature index out of range");
            require(finite(value[i]), "interval groups: a split's value must be finite");
            require(yes[i] > at && no[i] > at && yes[i] < static_cast<int>(n) && no[i] < static_cast<int>(n),
                    "interval groups: children must follow their parent");
        }
    }
    TypeModel& t = types_[type];
    t.groups[static_cast<std::size_t>(target)] = IntervalGroups{feature, yes, no, value, lo, hi};
    has_intervals_ = true;
}

void Model::layer_factors(const std::int64_t* row, const LayerResult& result, double* out) const {
    const TypeModel& tm = types_[static_cast<int>(row[kType])];
    for (int k = 0; k < kIntervalTargets; ++k) {
        out[2 * k] = tm.present ? tm.factor(k, false, result.group) : 1.0;
        out[2 * k + 1] = tm.present ? tm.factor(k, true, result.group) : 1.0;
    }
}

void Model::set_adjust(int type, int target, double scale, double min, double max, double scale_from) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(target == 0 || target == 1, "target must be 0 (runtime) or 1 (power)");
    require(finite(scale) && scale > 0.0, "adjust: the scale must be a positive finite number");
    require(finite(min) && min >= 0.0 && !std::isnan(max) && max >= min, "adjust: need 0 <= min <= max");
    require(finite(scale_from) && scale_from >= 0.0, "adjust: scale_from must be a non-negative finite number");
    TypeModel& t = types_[type];
    (target == 0 ? t.runtime_scale_from : t.power_scale_from) = scale_from;
    (target == 0 ? t.runtime_scale : t.power_scale) = scale;
    (target == 0 ? t.runtime_min : t.power_min) = min;
    (target == 0 ? t.runtime_max : t.power_max) = max;
}

void Model::set_floor(int type, double ms, double power_w) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(finite(ms) && ms >= 0.0 && finite(power_w) && power_w >= 0.0, "floor: need finite ms >= 0, power_w >= 0");
    types_[type].floor_ms = ms;
    types_[type].floor_power_w = power_w;
}

void Model::set_rows_layout(int type, bool rows) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    types_[type].rows_layout = rows;
}

void Model::set_stream(int type, double rows_hi, double channels_hi) {
    version_ = next_version++;
    require(type >= 0 && type < kNumLayerTypes, "layer type code out of range");
    require(finite(rows_hi) && rows_hi >= 0.0 && finite(channels_hi) && channels_hi >= 0.0,
            "stream: the largest rows and channels must be non-negative finite numbers");
    types_[type].stream_rows_hi = rows_hi;
    types_[type].stream_channels_hi = channels_hi;
}

namespace {

// Multiplies the features that count a layer's size (rows, elements, FLOPs, bytes) by k: the same kernel over k times
// as many rows.
void scale_extensive(double* f, double k) {
    for (int i : {kFRows, kFBatch, kFFlops, kFBytesMoved, kFElementsIn, kFElementsOut}) f[i] *= k;
}

// A streaming layer's features beyond the largest tensor its type's fit saw, brought back within it (see
// TypeModel): returns the factor its runtime takes.
double stream_within(const TypeModel& tm, double* f) {
    if (tm.stream_channels_hi > 0.0 && f[kFInChannels] > tm.stream_channels_hi) {
        const double k = f[kFInChannels] / tm.stream_channels_hi;
        f[kFInChannels] = tm.stream_channels_hi;
        f[kFRows] *= k;
        f[kFBatch] *= k;
    }
    if (tm.stream_rows_hi <= 0.0 || f[kFRows] <= tm.stream_rows_hi) return 1.0;
    const double k = f[kFRows] / tm.stream_rows_hi;
    scale_extensive(f, 1.0 / k);
    return k;
}

}  // namespace

void Model::set_blend(const std::vector<Model>& members, const std::vector<double>& weights) {
    version_ = next_version++;
    require(!members.empty() && members.size() == weights.size(), "blend: need one weight per member, and a member");
    require(members.size() <= kMaxBlendMembers, "blend: too many members");
    double most = 0.0;
    for (std::size_t k = 0; k < members.size(); ++k) {
        require(members[k].blend_.empty(), "blend: a member may not be a blend itself");
        require(finite(weights[k]) && weights[k] > 0.0, "blend: every weight must be a positive finite number");
        most = std::max(most, weights[k]);
    }
    blend_ = members;
    blend_weight_.clear();
    for (double w : weights) blend_weight_.push_back(w / most);  // only their ratios count
}

void Model::finish() {
    version_ = next_version++;
    for (int t = 0; t < kNumLayerTypes; ++t) {
        bool present = has_runtime_[t] && has_power_[t];
        if (!blend_.empty()) {
            present = false;
            for (const Model& m : blend_) present |= m.covers(static_cast<LayerType>(t));
        }
        types_[t].present = present;
    }
}

LayerResult Model::blend_row(const std::int64_t* row, int type) const {
    double weight = 0.0, log_runtime = 0.0, log_power = 0.0;
    bool extrapolated = false;
    for (std::size_t k = 0; k < blend_.size(); ++k) {
        if (!blend_[k].covers(static_cast<LayerType>(type))) continue;
        LayerResult m;
        blend_[k].evaluate(row, 1, &m);
        const double w = blend_weight_[k];
        weight += w;
        log_runtime += w * std::log(m.runtime_ms);  // log(0) = -inf: a member predicting 0 makes it 0
        log_power += w * std::log(m.power_w);
        extrapolated |= m.extrapolated;
    }
    LayerResult res;
    res.runtime_ms = std::exp(log_runtime / weight);
    res.power_w = std::exp(log_power / weight);
    res.energy_mj = res.runtime_ms * res.power_w;
    res.extrapolated = extrapolated;
    return res;
}

std::ptrdiff_t Model::evaluate(const std::int64_t* rows, std::size_t n, LayerResult* out, ValidationError* invalid,
                               ResultCache* cache) const {
    std::array<double, kNumFeatures> f{};
    std::vector<double> scratch;
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t* r = rows + i * kNumFields;
        std::uint64_t h = 0;
        const bool cached = cache != nullptr && cache->use();
        if (cached) {
            h = ResultCache::hash(r);
            if (const LayerResult* hit = cache->find(r, h)) {
                out[i] = *hit;
                continue;
            }
        }
        InfoRow info;
        if (invalid != nullptr) {
            ValidationError e = validate(r, &info);
            if (e) {
                *invalid = std::move(e);
                return static_cast<std::ptrdiff_t>(i);
            }
        }
        const int type = static_cast<int>(r[kType]);
        const TypeModel& tm = types_[type];
        LayerResult& res = out[i];
        if (!tm.present) {
            if (is_free_type(static_cast<LayerType>(type))) {
                res = LayerResult{};
                continue;
            }
            return static_cast<std::ptrdiff_t>(i);
        }
        if (!blend_.empty()) {
            res = blend_row(r, type);
            if (cached) cache->insert(r, h, res);
            continue;
        }
        if (invalid == nullptr) info = compute_info(r);
        std::array<std::int64_t, kNumFields> laid_out;
        if (tm.rows_layout && to_rows_layout(r, laid_out.data())) {
            const InfoRow laid_info = compute_info(laid_out.data());
            compute_features(laid_out.data(), laid_info.data(), f.data());
            // a broadcast add or mul read as the full one of as many bytes (fewer rows): what streams is bytes
            const auto moved = [](const InfoRow& i) {
                return static_cast<double>(i[kInfoBytesInput]) + static_cast<double>(i[kInfoBytesWeights]) +
                       static_cast<double>(i[kInfoBytesOutput]);
            };
            const double k = moved(info) / moved(laid_info);
            if (k != 1.0) scale_extensive(f.data(), k);
        } else {
            compute_features(r, info.data(), f.data());
        }
        const std::size_t need = std::max(tm.runtime.scratch_size(), tm.power.scratch_size());
        if (scratch.size() < need) scratch.resize(need);
        double runtime;
        if (tm.stream_rows_hi > 0.0 || tm.stream_channels_hi > 0.0) {
            std::array<double, kNumFeatures> within = f;
            const double k = stream_within(tm, within.data());
            runtime = k * clip(tm.runtime.eval(within.data(), scratch.data()));
        } else {
            runtime = clip(tm.runtime.eval(f.data(), scratch.data()));
        }
        res.runtime_ms = adjust(runtime, tm.runtime_scale, tm.runtime_min, tm.runtime_max, tm.runtime_scale_from);
        res.power_w = adjust(clip(tm.power.eval(f.data(), scratch.data())), tm.power_scale, tm.power_min,
                             tm.power_max, tm.power_scale_from);
        if (res.runtime_ms < tm.floor_ms) {  // launch-bound: the kernel, then the wait for the next launch
            res.power_w =
                (res.power_w * res.runtime_ms + tm.floor_power_w * (tm.floor_ms - res.runtime_ms)) / tm.floor_ms;
            res.runtime_ms = tm.floor_ms;
        }
        res.energy_mj = res.runtime_ms * res.power_w;
        for (int k = 0; k < kIntervalTargets; ++k) {
            const IntervalGroups& g = tm.groups[static_cast<std::size_t>(k)];
            res.group[k] = g.empty() ? 0 : g.leaf(f.data());
        }
        bool extrapolated = false;
        for (std::size_t k = 0; k < tm.range_feature.size(); ++k) {
            const double v = f[tm.range_feature[k]];
            extrapolated |= v < tm.range_lo[k] || v > tm.range_hi[k];
        }
        res.extrapolated = extrapolated;
        if (cached) cache->insert(r, h, res);
    }
    return -1;
}

std::ptrdiff_t Model::evaluate_archs(const std::int64_t* rows, const std::int64_t* offsets, std::size_t n_archs,
                                     double* runtime_ms, double* power_w, double* energy_mj, std::int64_t* bottleneck,
                                     double* bottleneck_energy_mj, double* bottleneck_runtime_ms,
                                     std::int64_t* extrapolated, LayerResult* layers, int threads,
                                     ValidationError* invalid, double* bounds, const std::int64_t* index,
                                     std::size_t n_rows, ResultCache* cache) const {
    // never more threads than architectures (a huge request is not an allocation of that many slots)
    const std::size_t n_threads =
        std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(std::max(1, threads)), n_archs));
    std::vector<std::ptrdiff_t> bad(n_threads, -1);
    std::vector<ValidationError> errors(n_threads);
    // With an index, the distinct rows are evaluated first, once each; a bad one is reported at the first layer
    // that is it.
    std::vector<LayerResult> distinct;
    if (index != nullptr) {
        distinct.resize(n_rows);
        std::vector<char> failed(n_threads, 0);
        auto part = [&](std::size_t t) {
            const std::size_t u0 = n_rows * t / n_threads, u1 = n_rows * (t + 1) / n_threads;
            ValidationError ignored;
            failed[t] = evaluate(rows + u0 * kNumFields, u1 - u0, distinct.data() + u0,
                                 invalid != nullptr ? &ignored : nullptr) >= 0;
        };
        if (cache != nullptr) {
            ValidationError ignored;
            failed[0] = evaluate(rows, n_rows, distinct.data(), invalid != nullptr ? &ignored : nullptr, cache) >= 0;
        } else if (n_threads == 1 || n_rows < 4096) {
            for (std::size_t t = 0; t < n_threads; ++t) part(t);
        } else {
            std::vector<std::thread> pool;
            for (std::size_t t = 0; t < n_threads; ++t) pool.emplace_back(part, t);
            for (auto& th : pool) th.join();
        }
        if (std::find(failed.begin(), failed.end(), 1) != failed.end()) {
            // row by row: which distinct rows are bad (one that no layer is is no error), the first layer that is
            std::vector<char> is_bad(n_rows, 0);
            std::vector<ValidationError> error_of(n_rows);
            for (std::size_t u = 0; u < n_rows; ++u)
                is_bad[u] = evaluate(rows + u * kNumFields, 1, &distinct[u],
                                     invalid != nullptr ? &error_of[u] : nullptr) >= 0;
            const std::size_t n = static_cast<std::size_t>(offsets[n_archs]);
            for (std::size_t j = 0; j < n; ++j)
                if (is_bad[static_cast<std::size_t>(index[j])]) {
                    if (invalid != nullptr) *invalid = error_of[static_cast<std::size_t>(index[j])];
                    return static_cast<std::ptrdiff_t>(j);
                }
        }
    }
    auto work = [&](std::size_t tid, std::size_t a0, std::size_t a1) {
        std::vector<LayerResult> local;
        ResultCache cache;
        for (std::size_t a = a0; a < a1; ++a) {
            const std::int64_t begin = offsets[a], end = offsets[a + 1];
            const std::size_t count = static_cast<std::size_t>(end - begin);
            LayerResult* res = layers;
            if (res != nullptr) {
                res += begin;
            } else if (index == nullptr) {
                if (local.size() < count) local.resize(count);
                res = local.data();
            }
            if (index != nullptr) {
                if (res != nullptr)
                    for (std::size_t i = 0; i < count; ++i)
                        res[i] = distinct[static_cast<std::size_t>(index[begin + i])];
            } else {
                const std::ptrdiff_t b = evaluate(rows + begin * kNumFields, count, res,
                                                  invalid != nullptr ? &errors[tid] : nullptr, &cache);
                if (b >= 0) {
                    bad[tid] = begin + b;
                    return;
                }
            }
            // layer i of the architecture: its result, and its row
            const std::int64_t* ix = index != nullptr ? index + begin : nullptr;
            auto result = [&](std::size_t i) -> const LayerResult& {
                return ix != nullptr ? distinct[static_cast<std::size_t>(ix[i])] : res[i];
            };
            auto row_of = [&](std::size_t i) -> const std::int64_t* {
                return rows + (ix != nullptr ? ix[i] : begin + static_cast<std::int64_t>(i)) * kNumFields;
            };
            // the bottleneck: the most energy, ties (a model without power: all 0) broken by runtime
            double t = 0.0, e = 0.0, best = -1.0, best_t = -1.0;
            std::int64_t best_i = -1, n_extra = 0;
            for (std::size_t i = 0; i < count; ++i) {
                const LayerResult& r = result(i);
                t += r.runtime_ms;
                e += r.energy_mj;
                if (r.energy_mj > best || (r.energy_mj == best && r.runtime_ms > best_t)) {
                    best = r.energy_mj;
                    best_t = r.runtime_ms;
                    best_i = static_cast<std::int64_t>(i);
                }
                n_extra += r.extrapolated ? 1 : 0;
            }
            if (bounds != nullptr) {
                double* out = bounds + kBoundSums * a;
                std::fill(out, out + kBoundSums, has_intervals_ ? 0.0 : TypeModel::kNoBound);
                if (has_intervals_) {
                    for (std::size_t i = 0; i < count; ++i) {
                        const TypeModel& tm = types_[static_cast<int>(row_of(i)[kType])];
                        if (!tm.present) continue;  // a free type: nothing, exactly
                        const LayerResult& res_i = result(i);
                        const double r = res_i.runtime_ms, e_i = res_i.energy_mj;
                        const std::uint8_t* g = res_i.group;
                        out[kRuntimeLo] += r * tm.factor(kIntervalRuntime, false, g);
                        out[kRuntimeHi] += r * tm.factor(kIntervalRuntime, true, g);
                        // the layer's power bounds weighted by its predicted runtime: energy x power's factors
                        out[kPowerTimeLo] += e_i * tm.factor(kIntervalPower, false, g);
                        out[kPowerTimeHi] += e_i * tm.factor(kIntervalPower, true, g);
                        out[kEnergyLo] += e_i * tm.factor(kIntervalEnergy, false, g);
                        out[kEnergyHi] += e_i * tm.factor(kIntervalEnergy, true, g);
                    }
                }
            }
            runtime_ms[a] = t;
            energy_mj[a] = e;
            power_w[a] = t > 0.0 ? e / t : 0.0;
            bottleneck[a] = best_i;
            bottleneck_energy_mj[a] = best_i >= 0 ? best : 0.0;
            bottleneck_runtime_ms[a] = best_i >= 0 ? best_t : 0.0;
            extrapolated[a] = n_extra;
        }
    };
    if (n_threads == 1 || n_archs < 2 * n_threads) {
        work(0, 0, n_archs);
    } else {
        std::vector<std::thread> pool;
        const std::size_t per = (n_archs + n_threads - 1) / n_threads;
        for (std::size_t t = 0; t < n_threads; ++t) {
            const std::size_t a0 = t * per, a1 = std::min(n_archs, a0 + per);
            if (a0 < a1) pool.emplace_back(work, t, a0, a1);
        }
        for (auto& th : pool) th.join();
    }
    std::ptrdiff_t first = -1;
    for (std::size_t t = 0; t < n_threads; ++t)
        if (bad[t] >= 0 && (first < 0 || bad[t] < first)) {
            first = bad[t];
            if (invalid != nullptr) *invalid = errors[t];
        }
    return first;
}

}  // namespace neuralpower
