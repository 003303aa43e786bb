from optimize.cpu import choose_format, detect_cpu

X86 = "model name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {extra}\n"


def test_vnni_uses_u8s8_without_reduce_range():
    cpu = detect_cpu(X86.format(extra="avx512f avx512bw avx512_vnni"))
    assert cpu.vnni and cpu.model_name == "Test CPU"
    fmt = choose_format(cpu)
    assert (fmt.activation_type, fmt.weight_type, fmt.reduce_range) == ("uint8", "int8", False)


def test_avx2_without_vnni_reduces_range():
    fmt = choose_format(detect_cpu(X86.format(extra="avx512f")))
    assert (fmt.activation_type, fmt.weight_type, fmt.reduce_range) == ("uint8", "int8", True)
    assert "saturation" in fmt.reason


def test_arm_uses_s8s8():
    fmt = choose_format(detect_cpu("Features\t: fp asimd asimddp\n"))
    assert (fmt.activation_type, fmt.weight_type, fmt.reduce_range) == ("int8", "int8", False)


def test_plain_cpu_uses_u8u8():
    fmt = choose_format(detect_cpu(X86.format(extra="").replace("avx2", "")))
    assert (fmt.activation_type, fmt.weight_type) == ("uint8", "uint8")
