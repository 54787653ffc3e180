"""The two ResNet variants resnet-mpi implements, in PyTorch, as the reference for the C code.

`seed` is the seed notebook's model (section 4 of resnet-seed.txt) copied with its quirks: ONE
BatchNorm per block applied twice, BNs without running statistics, a stem convolution with a bias, and
a 1x1 convolution + BN shortcut where the spatial size changes. It is generalised only where the C
program is: depth 6n+2, input channels, classes and image size. The seed hard-codes the input size of
each stage (32, 32, 16) and an 8x8 average pool; here the real sizes are passed down and the pool is
global, which is the same network at 32x32 and also works on 28x28 Fashion-MNIST.

`paper` is He et al. 2016's CIFAR ResNet as the widely used PyTorch reproduction writes it: stem conv
without bias, conv-BN-ReLU-conv-BN blocks, and the parameter-free option-A shortcut.

State-dict names are the C parameter table's names; scripts/torch_export.py imports `build`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("seed", "paper")


def _seed_init(model):
    # The seed's initialisation; linear layers and the stem bias keep PyTorch's defaults.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# ---- seed ------------------------------------------------------------------------------------------

class block(nn.Module):
    """The seed's residual block, unchanged (the class name included, so that repr() matches)."""

    def __init__(self, in_channels, input_dim, channels, downsample_stride=1,
                 padding=1, kernel_size=3):
        super(block, self).__init__()
        self.input_dim = input_dim
        self.in_channels = in_channels
        self.channels = channels
        self.downsample_stride = downsample_stride
        self.padding = padding
        self.kernel_size = kernel_size
        self.__calc_output_size__()
        self.__initialize_graph_modules__()

    def __calc_output_size__(self):
        self.output_dim = math.floor((self.input_dim + 2 * self.padding - self.kernel_size) /
                                     self.downsample_stride + 1)

    def __initialize_graph_modules__(self):
        # Registration order (bn, relu, conv1, conv2, downsample) fixes the state_dict order.
        self.bn = nn.BatchNorm2d(self.channels, track_running_stats=False)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(self.in_channels, self.channels,
                               kernel_size=self.kernel_size,
                               padding=self.padding, stride=self.downsample_stride,
                               bias=False)
        self.conv2 = nn.Conv2d(self.channels, self.channels,
                               kernel_size=self.kernel_size,
                               padding=1,
                               stride=1,
                               bias=False)
        # The seed compares spatial sizes only: a channel change at stride 1 would get no projection.
        if self.output_dim != self.input_dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, self.channels,
                          kernel_size=1, stride=self.downsample_stride, bias=False,
                          padding=0),
                nn.BatchNorm2d(self.channels, track_running_stats=False))
        else:
            self.downsample = None

    def forward(self, x):
        identity = x
        if self.downsample is not None:
            identity = self.downsample(identity)
        x = self.conv1(x)
        x = self.bn(x)
        x = self.relu(x)
        x = self.conv2(x)
        x += identity
        x = self.bn(x)   # the same BN module (and parameters) as above: the seed's quirk
        x = self.relu(x)
        return x


class ResNet(nn.Module):
    """The seed's ResNet with depth = 6n + 2, image_size and a global average pool."""

    def __init__(self, img_channels, learning_rate=0.1, batch_size=128,
                 n=3, num_classes=10, image_size=32):
        super(ResNet, self).__init__()
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.img_channels = img_channels
        self.n = n
        self.num_classes = num_classes
        self.image_size = image_size
        self.__initialize_graph_modules__()

    def __make_layer__(self, block, stride, in_channels, input_dim, channels):
        layers = []
        layers.append(block(in_channels, input_dim, channels, downsample_stride=stride))
        input_dim = math.floor((input_dim + 2 - 3) / stride + 1)
        for i in range(self.n - 1):
            layers.append(block(channels, input_dim, channels))
        return nn.Sequential(*layers)

    @staticmethod
    def _out_dim(input_dim, stride):
        return math.floor((input_dim + 2 - 3) / stride + 1)

    def __initialize_graph_modules__(self):
        self.conv1 = nn.Conv2d(self.img_channels, out_channels=16,
                               kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16, track_running_stats=False)
        self.relu = nn.ReLU()
        # The seed passes 32, 32, 16: the input size of each stage at 32x32 images.
        dim1 = self.image_size
        dim2 = self._out_dim(dim1, 1)
        dim3 = self._out_dim(dim2, 2)
        self.module1 = self.__make_layer__(block, stride=1, in_channels=16,
                                           input_dim=dim1, channels=16)
        self.module2 = self.__make_layer__(block, stride=2, in_channels=16,
                                           input_dim=dim2, channels=32)
        self.module3 = self.__make_layer__(block, stride=2, in_channels=32,
                                           input_dim=dim3, channels=64)
        # The seed's AvgPool2d(8) is a global pool at 32x32; adaptive keeps it global at 28x28.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features=64, out_features=self.num_classes)
        self.softmax = nn.Softmax(dim=1)
        _seed_init(self)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.module1(x)
        x = self.module2(x)
        x = self.module3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, start_dim=1)
        x = self.fc(x)
        return x

    def predict_probabilities(self, x):
        return self.softmax(self.forward(x))

    def predict_class(self, x):
        return torch.argmax(self.softmax(self.forward(x)), dim=1)


# ---- paper -----------------------------------------------------------------------------------------

class PaperBlock(nn.Module):
    """He et al. 2016 basic block with the option-A (subsample + zero channels) shortcut."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.option_a = stride != 1 or in_planes != planes
        self.pad = (planes - in_planes) // 2

    def shortcut(self, x):
        if not self.option_a:
            return x
        # (planes - in_planes) / 2 zero channels before and after: planes // 4 when planes doubles
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class PaperResNet(nn.Module):
    def __init__(self, n=3, in_channels=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.module1 = self._make_layer(16, 16, n, 1)
        self.module2 = self._make_layer(16, 32, n, 2)
        self.module3 = self._make_layer(32, 64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        # The C model initialises both variants the seed's way; so does this reference.
        _seed_init(self)

    @staticmethod
    def _make_layer(in_planes, planes, n, stride):
        layers = [PaperBlock(in_planes, planes, stride)]
        layers += [PaperBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.module3(self.module2(self.module1(x)))
        x = torch.flatten(self.avgpool(x), start_dim=1)
        return self.fc(x)


# ---- entry point -----------------------------------------------------------------------------------

def blocks_per_stage(depth):
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth {depth} is not 6n+2 (20, 32, 44, 56, 110)")
    return (depth - 2) // 6


def build(arch, depth=20, in_channels=3, classes=10, image_size=32):
    """The model of `arch` ('seed' or 'paper'), freshly initialised from torch's global RNG."""
    n = blocks_per_stage(depth)
    if arch == "seed":
        return ResNet(img_channels=in_channels, n=n, num_classes=classes, image_size=image_size)
    if arch == "paper":
        return PaperResNet(n=n, in_channels=in_channels, num_classes=classes)
    raise ValueError(f"unknown architecture {arch!r} (seed, paper)")


def use_reference(model, reference):
    """resnet-mpi's --bn-eval reference in PyTorch: every BN application normalizes with fixed statistics,
    reference[module name] = tensor [applications, 2 (mean, biased var), channels] in call order (the seed's
    block BN is applied twice), as F.batch_norm in eval mode does with running statistics. Works on the
    model in place (any train/eval mode); torch_export.py saves the statistics as 'reference_stats'."""
    calls = {}
    model.register_forward_pre_hook(lambda module, inputs: calls.clear())
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            if name not in reference:
                raise ValueError(f"no reference statistics for {name}")

            def fixed(x, mod=mod, name=name):
                k = calls.get(name, 0)
                calls[name] = k + 1
                stats = reference[name][k].to(x.dtype)
                return F.batch_norm(x, stats[0], stats[1], mod.weight, mod.bias, False, 0.0, mod.eps)
            mod.forward = fixed
    return model


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# The counts the C program's model_count_params must agree with (ResNet-20, 3x32x32, 10 classes). The
# seed notebook's torchsummary prints 272,490 because it counts each block's shared BN twice.
EXPECTED_PARAMS_D20 = {"seed": 271_818, "paper": 269_722}



def _check_counts():
    # fork_rng: importing this module must not move the caller's torch RNG (scripts seed it and expect
    # the same weights whether or not they imported us first).
    with torch.random.fork_rng(devices=[]):
        for arch, count in EXPECTED_PARAMS_D20.items():
            got = count_params(build(arch))
            assert got == count, f"{arch}: {got} parameters, expected {count}"


_check_counts()

if __name__ == "__main__":
    for a in ARCHS:
        for d in (20, 32, 44, 56, 110):
            print(f"{a:5s} depth {d:3d}: {count_params(build(a, d)):,} parameters")
