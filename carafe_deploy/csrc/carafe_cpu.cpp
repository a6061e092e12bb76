// CPU kernels of carafe_deploy::carafe (forward and backward), JIT-compiled by carafe_deploy/ops/_cpu.py and
// registered as carafe_deploy_cpu::forward / carafe_deploy_cpu::backward. The Python op (carafe_deploy/ops/carafe.py)
// validates the arguments with messages for the user; the checks here only keep the memory accesses in bounds.
//
// Layout of the work (CONTRACT §1 semantics; N C H W, kernels N (G k k) Ho Wo):
// - Output rows are split into bands; one band of one (image, group) is one work item. The items are taken from an
//   atomic counter inside a single at::parallel_for region, so a descheduled thread never holds up the others and a
//   call opens exactly one parallel section (torch's own thread pool: torch.set_num_threads applies).
// - Each source row of a channel is "expanded" once per band into a buffer in which every tap column kx is a
//   contiguous run of Wo values (mode up: the nearest-upsampled row, tap kx starts at s·kx; mode down: the row split
//   into its s phases, tap kx starts at phase kx%s, column kx/s). The inner loops are then plain contiguous FMAs over
//   output columns, with the kernel weights of a tap loaded once per vector and reused across a block of channels.
// - Half types accumulate in float (converted per row, F16C where the CPU has it), float64 in float64.
// - The backward has the same structure: grad_kernels of a band is owned by it (summed over the group's channels);
//   grad_features of the source rows a band owns are gathered from every output row that reads them, so no two
//   items write the same memory and no atomics are needed.
// - The kernels are compiled for AVX-512, AVX2 and the platform's baseline (carafe_cpu_dispatch.h); the widest one
//   this CPU runs is used unless carafe_deploy_cpu::isa chose another.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "carafe_cpu_dispatch.h"

namespace
{

using carafe_cpu::Geometry;
using carafe_cpu::Isa;

// ------------------------------------------------------------------------------------------------------------------
// Outputs that are reused instead of page-faulted afresh.
//
// glibc serves blocks above 32 MiB with a fresh mmap and unmaps them when they are freed (smaller ones too, depending
// on what was allocated before), so an op whose output is that large (the 69 MB of an FPN level) page-faults and
// zeroes its whole output again on every call: about half the op's time at such sizes. The op's own outputs of at
// least kReuseMinBytes therefore come from this allocator, which keeps the blocks freed last, up to a budget
// (CARAFE_DEPLOY_CPU_REUSE_MB, default 256; 0 turns it off), and hands one out again to a request it fits (at most a
// quarter larger). Smaller outputs use torch's CPU allocator as usual. The kept blocks stay resident (they count in
// the process's RSS) until newer ones evict them or carafe_deploy_cpu::release_reused() frees them.
class ReusingAllocator final : public c10::Allocator
{
public:
    static constexpr size_t kReuseMinBytes = size_t(4) << 20;

    static ReusingAllocator& instance()
    {
        static ReusingAllocator* const allocator = new ReusingAllocator(); // never destroyed: outlives every tensor
        return *allocator;
    }

    c10::DataPtr allocate(size_t n) override
    {
        if (n < kReuseMinBytes || budget_ == 0)
        {
            return c10::GetCPUAllocator()->allocate(n);
        }
        Block* block = take(n);
        if (block == nullptr)
        {
            block = new Block{c10::alloc_cpu(n), n};
        }
        return {block->ptr, block, &ReusingAllocator::release, c10::Device(c10::DeviceType::CPU)};
    }

    void copy_data(void* dest, void const* src, std::size_t count) const override
    {
        default_copy_data(dest, src, count);
    }

    // bytes kept now, and the budget
    std::vector<int64_t> stats()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return {static_cast<int64_t>(kept_), static_cast<int64_t>(budget_)};
    }

    void releaseAll()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (Block* b : free_)
        {
            destroy(b);
        }
        free_.clear();
        kept_ = 0;
    }

private:
    struct Block
    {
        void* ptr;
        size_t size;
    };

    ReusingAllocator()
    {
        char const* env = std::getenv("CARAFE_DEPLOY_CPU_REUSE_MB");
        long long const mb = env && *env ? std::atoll(env) : 256;
        budget_ = mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
    }

    static void destroy(Block* b)
    {
        c10::free_cpu(b->ptr);
        delete b;
    }

    // the smallest kept block that fits n (and is at most a quarter larger), or null
    Block* take(size_t n)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        auto best = free_.end();
        for (auto it = free_.begin(); it != free_.end(); ++it)
        {
            if ((*it)->size >= n && (*it)->size - n <= n / 4 && (best == free_.end() || (*it)->size < (*best)->size))
            {
                best = it;
            }
        }
        if (best == free_.end())
        {
            return nullptr;
        }
        Block* b = *best;
        free_.erase(best);
        kept_ -= b->size;
        return b;
    }

    static void release(void* context)
    {
        instance().keep(static_cast<Block*>(context));
    }

    void keep(Block* b)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (b->size > budget_)
        {
            destroy(b);
            return;
        }
        while (kept_ + b->size > budget_) // evict the blocks freed longest ago
        {
            kept_ -= free_.front()->size;
            destroy(free_.front());
            free_.erase(free_.begin());
        }
        free_.push_back(b);
        kept_ += b->size;
    }

    std::mutex mutex_;
    std::vector<Block*> free_; // freed longest ago first
    size_t kept_ = 0;
    size_t budget_ = 0;
};

at::Tensor emptyOutput(at::IntArrayRef sizes, at::ScalarType dtype)
{
    return at::detail::empty_generic(sizes, &ReusingAllocator::instance(), c10::DispatchKeySet(c10::DispatchKey::CPU),
        dtype, at::MemoryFormat::Contiguous);
}

// ------------------------------------------------------------------------------------------------------------------
// Instruction set and threads.

std::atomic<int> gIsa{-1}; // carafe_cpu::Isa; -1 until the first call: the widest this CPU runs

Isa currentIsa()
{
    int isa = gIsa.load();
    if (isa < 0)
    {
        isa = static_cast<int>(carafe_cpu::bestIsa());
        gIsa.store(isa);
    }
    return static_cast<Isa>(isa);
}

Isa isaNamed(std::string const& name)
{
    for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16})
    {
        if (name == carafe_cpu::isaName(isa))
        {
            return isa;
        }
    }
    TORCH_CHECK(false, "carafe CPU kernel: unknown instruction set '", name, "' (generic, avx2, avx512 or avx512bf16)");
    return Isa::kGeneric;
}

// carafe_deploy_cpu::isa_status(name): "" when the kernels of that instruction set can run here, else why not
std::string isaStatus(std::string const& name)
{
    Isa const isa = isaNamed(name);
    if (!carafe_cpu::isaCompiled(isa))
    {
        return "this build of the kernels has no " + name + " code (it needs GCC on x86-64)";
    }
    if (!carafe_cpu::isaSupported(isa))
    {
        return std::string("this CPU lacks the instructions of the ") + name + " kernels ("
            + (isa == Isa::kAvx512Bf16 ? "AVX-512 F/BW/DQ/VL and BF16, AVX2, FMA, F16C"
                    : isa == Isa::kAvx512 ? "AVX-512 F/BW/DQ/VL, AVX2, FMA, F16C"
                                          : "AVX2, FMA, F16C")
            + ")";
    }
    return "";
}

// carafe_deploy_cpu::isa(""): the instruction set in use; isa(name): use that one from now on, returning the previous
std::string isa(std::string const& requested)
{
    std::string const previous = carafe_cpu::isaName(currentIsa());
    if (!requested.empty())
    {
        std::string const why = isaStatus(requested);
        TORCH_CHECK(why.empty(), "carafe CPU kernel: ", why);
        gIsa.store(static_cast<int>(isaNamed(requested)));
    }
    return previous;
}

std::vector<int64_t> reuseStats()
{
    return ReusingAllocator::instance().stats();
}

void releaseReused()
{
    ReusingAllocator::instance().releaseAll();
}

// at::parallel_for over n chunks of one: one OpenMP region on torch's pool, each of its threads runs body() once.
// (torch's other CPU ops run on the same OpenMP pool: a second pool for helpers would compete with its threads, which
// spin for a while after each region.)
void atenRun(void*, int64_t n, void (*body)(void*), void* bodyCtx)
{
    at::parallel_for(0, n, 1, [&](int64_t, int64_t) { body(bodyCtx); });
}

carafe_cpu::Parallel torchParallel()
{
    return {std::max<int64_t>(1, at::get_num_threads()), &atenRun, nullptr};
}

carafe_cpu::DType dtypeOf(at::ScalarType t)
{
    switch (t)
    {
    case at::kFloat: return carafe_cpu::DType::kFloat32;
    case at::kDouble: return carafe_cpu::DType::kFloat64;
    case at::kHalf: return carafe_cpu::DType::kFloat16;
    case at::kBFloat16: return carafe_cpu::DType::kBFloat16;
    default: TORCH_CHECK(false, "carafe CPU kernel: float16, bfloat16, float32 or float64 expected, got ", t);
    }
    return carafe_cpu::DType::kFloat32;
}

// ------------------------------------------------------------------------------------------------------------------
// Entry points.

Geometry checkedGeometry(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    TORCH_CHECK(
        features.device().is_cpu() && kernels.device().is_cpu(), "carafe CPU kernel: tensors must be on the CPU");
    TORCH_CHECK(features.dim() == 4 && kernels.dim() == 4, "carafe CPU kernel: features and kernels must be 4-D");
    TORCH_CHECK(features.scalar_type() == kernels.scalar_type(), "carafe CPU kernel: dtypes differ");
    TORCH_CHECK(mode == "up" || mode == "down", "carafe CPU kernel: mode must be 'up' or 'down', got ", mode);
    TORCH_CHECK(kernelSize >= 1 && kernelSize % 2 == 1, "carafe CPU kernel: kernel_size must be odd and >= 1");
    TORCH_CHECK(group >= 1 && scale >= 1, "carafe CPU kernel: group and scale_factor must be >= 1");
    TORCH_CHECK(features.size(1) % group == 0, "carafe CPU kernel: channels must be divisible by group");
    Geometry const g = carafe_cpu::makeGeometry(features.size(0), features.size(1), features.size(2),
        features.size(3), kernelSize, group, scale, mode == "up");
    TORCH_CHECK(kernels.size(0) == g.n && kernels.size(1) == group * g.taps && kernels.size(2) == g.ho
            && kernels.size(3) == g.wo,
        "carafe CPU kernel: kernels shape ", kernels.sizes(), " does not match features ", features.sizes());
    return g;
}

at::Tensor forward(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    Geometry const g = checkedGeometry(features, kernels, kernelSize, group, scale, mode);
    carafe_cpu::DType const dtype = dtypeOf(features.scalar_type());
    at::Tensor const x = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    at::Tensor out = emptyOutput({g.n, g.c, g.ho, g.wo}, x.scalar_type());
    if (out.numel() == 0)
    {
        return out;
    }
    carafe_cpu::forward(currentIsa(), dtype, torchParallel(), g, x.const_data_ptr(), k.const_data_ptr(),
        out.mutable_data_ptr());
    return out;
}

std::tuple<at::Tensor, at::Tensor> backward(at::Tensor const& gradOutput, at::Tensor const& features,
    at::Tensor const& kernels, int64_t kernelSize, int64_t group, int64_t scale, std::string const& mode)
{
    Geometry const g = checkedGeometry(features, kernels, kernelSize, group, scale, mode);
    TORCH_CHECK(gradOutput.dim() == 4 && gradOutput.size(0) == g.n && gradOutput.size(1) == g.c
            && gradOutput.size(2) == g.ho && gradOutput.size(3) == g.wo,
        "carafe CPU kernel: grad_output shape ", gradOutput.sizes(), " is not the output shape");
    carafe_cpu::DType const dtype = dtypeOf(features.scalar_type());
    at::Tensor const go = gradOutput.to(features.scalar_type()).contiguous();
    at::Tensor const x = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    at::Tensor gradX = emptyOutput({g.n, g.c, g.h, g.w}, x.scalar_type()); // the kernel writes every element
    if (go.numel() == 0)
    {
        // C = 0 leaves kernels with no gradient: zero
        return {gradX, at::zeros(k.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous))};
    }
    at::Tensor gradK = emptyOutput(k.sizes(), x.scalar_type());
    carafe_cpu::backward(currentIsa(), dtype, torchParallel(), g, go.const_data_ptr(), x.const_data_ptr(),
        k.const_data_ptr(), gradX.mutable_data_ptr(), gradK.mutable_data_ptr());
    return {gradX, gradK};
}

} // namespace

TORCH_LIBRARY(carafe_deploy_cpu, m)
{
    m.def("forward(Tensor features, Tensor kernels, int kernel_size, int group, int scale_factor, str mode) -> Tensor");
    m.def("backward(Tensor grad_output, Tensor features, Tensor kernels, int kernel_size, int group, int scale_factor, "
          "str mode) -> (Tensor, Tensor)");
    m.def("isa(str requested=\"\") -> str", &isa);
    m.def("isa_status(str name) -> str", &isaStatus);
    m.def("reuse_stats() -> int[]", &reuseStats);
    m.def("release_reused() -> ()", &releaseReused);
}

TORCH_LIBRARY_IMPL(carafe_deploy_cpu, CPU, m)
{
    m.impl("forward", &forward);
    m.impl("backward", &backward);
}
