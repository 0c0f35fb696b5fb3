// Direct encodings of the x86-64 instructions the JIT emits most, on top of
// xbyak's CodeGenerator.
//
// xbyak takes about 35 ns per instruction (its operand checks run for every
// encoding it knows, and branch on the operand kinds each time): for a
// 1,000-instruction program that was 66 us of a 103 us compile. These
// overloads write the bytes of the common forms at once:
//   ALU reg, reg and reg, imm (add, sub, and, or, xor, cmp, test, mov) of
//   32 or 64 bits; mov reg, imm; loads and stores ([base + disp32], 64-bit
//   base, no index) of 16, 32 or 64-bit registers and immediates; movzx,
//   movsx, movsxd from such memory.
// Every other form, and any instruction when the buffer is nearly full
// (xbyak then reports the error), goes to xbyak. The bytes are xbyak's,
// encoding for encoding: x86_asm_test.cc compares both on every register
// and on immediates and displacements at each size boundary.
#pragma once

#define XBYAK_NO_EXCEPTION
#include <xbyak/xbyak.h>

#include <cstdint>

namespace userbpf::vm::jit {

class X86Asm : public Xbyak::CodeGenerator {
 public:
  using Reg = Xbyak::Reg;
  using Operand = Xbyak::Operand;
  using Address = Xbyak::Address;
  using CodeGenerator::add;
  using CodeGenerator::and_;
  using CodeGenerator::cmp;
  using CodeGenerator::CodeGenerator;
  using CodeGenerator::mov;
  using CodeGenerator::movsx;
  using CodeGenerator::movsxd;
  using CodeGenerator::movzx;
  using CodeGenerator::or_;
  using CodeGenerator::sub;
  using CodeGenerator::test;
  using CodeGenerator::xor_;

  void add(const Reg& d, const Reg& s) {
    if (!rr(0x01, d, s)) CodeGenerator::add(d, s);
  }
  void sub(const Reg& d, const Reg& s) {
    if (!rr(0x29, d, s)) CodeGenerator::sub(d, s);
  }
  void and_(const Reg& d, const Reg& s) {
    if (!rr(0x21, d, s)) CodeGenerator::and_(d, s);
  }
  void or_(const Reg& d, const Reg& s) {
    if (!rr(0x09, d, s)) CodeGenerator::or_(d, s);
  }
  void xor_(const Reg& d, const Reg& s) {
    if (!rr(0x31, d, s)) CodeGenerator::xor_(d, s);
  }
  void cmp(const Reg& d, const Reg& s) {
    if (!rr(0x39, d, s)) CodeGenerator::cmp(d, s);
  }
  void test(const Reg& d, const Reg& s) {
    if (!rr(0x85, d, s)) CodeGenerator::test(d, s);
  }
  void mov(const Reg& d, const Reg& s) {
    if (!rr(0x89, d, s)) CodeGenerator::mov(d, s);
  }

  void add(const Reg& d, uint32_t imm) {
    if (!ri(0, d, imm)) CodeGenerator::add(d, imm);
  }
  void or_(const Reg& d, uint32_t imm) {
    if (!ri(1, d, imm)) CodeGenerator::or_(d, imm);
  }
  void and_(const Reg& d, uint32_t imm) {
    if (!ri(4, d, imm)) CodeGenerator::and_(d, imm);
  }
  void sub(const Reg& d, uint32_t imm) {
    if (!ri(5, d, imm)) CodeGenerator::sub(d, imm);
  }
  void xor_(const Reg& d, uint32_t imm) {
    if (!ri(6, d, imm)) CodeGenerator::xor_(d, imm);
  }
  void cmp(const Reg& d, uint32_t imm) {
    if (!ri(7, d, imm)) CodeGenerator::cmp(d, imm);
  }
  void test(const Reg& d, uint32_t imm) {
    if (!gpr(d) || !room()) return CodeGenerator::test(d, imm);
    uint8_t* p = at();
    p = rex(p, d.isBit(64), 0, 0, d.getIdx());
    if (d.getIdx() == 0) {
      *p++ = 0xa9;
    } else {
      *p++ = 0xf7;
      *p++ = static_cast<uint8_t>(0xc0 | (d.getIdx() & 7));
    }
    done(put32(p, imm));
  }

  void mov(const Reg& d, uint64_t imm) {
    if (!gpr(d) || !room()) return CodeGenerator::mov(d, imm);
    uint8_t* p = at();
    const int idx = d.getIdx();
    if (d.isBit(32) || (imm >> 32) == 0) {  // mov r32, imm32 (zero-extends)
      p = rex(p, false, 0, 0, idx);
      *p++ = static_cast<uint8_t>(0xb8 | (idx & 7));
      p = put32(p, static_cast<uint32_t>(imm));
    } else if (static_cast<int64_t>(imm) == static_cast<int32_t>(imm)) {  // sign-extended
      p = rex(p, true, 0, 0, idx);
      *p++ = 0xc7;
      *p++ = static_cast<uint8_t>(0xc0 | (idx & 7));
      p = put32(p, static_cast<uint32_t>(imm));
    } else {  // movabs
      p = rex(p, true, 0, 0, idx);
      *p++ = static_cast<uint8_t>(0xb8 | (idx & 7));
      p = put32(put32(p, static_cast<uint32_t>(imm)), static_cast<uint32_t>(imm >> 32));
    }
    done(p);
  }

  // Loads, stores and register moves.
  void mov(const Operand& a, const Operand& b) {
    int base = 0;
    int32_t disp = 0;
    if (a.isREG() && b.isMEM() && gpr(a.getReg()) &&
        simple_mem(static_cast<const Address&>(b), &base, &disp) && room()) {
      const Reg& r = a.getReg();
      uint8_t* p = rex(at(), r.isBit(64), r.getIdx(), 0, base);
      *p++ = 0x8b;
      done(modrm_mem(p, r.getIdx(), base, disp));
      return;
    }
    if (a.isMEM() && b.isREG() && (gpr(b.getReg()) || b.isBit(16)) &&
        simple_mem(static_cast<const Address&>(a), &base, &disp) && room()) {
      const Reg& r = b.getReg();
      uint8_t* p = at();
      if (r.isBit(16)) *p++ = 0x66;
      p = rex(p, r.isBit(64), r.getIdx(), 0, base);
      *p++ = 0x89;
      done(modrm_mem(p, r.getIdx(), base, disp));
      return;
    }
    if (a.isREG() && b.isREG()) return mov(a.getReg(), b.getReg());
    CodeGenerator::mov(a, b);
  }
  // Stores of immediates (and mov reg, imm through the Reg overload).
  void mov(const Operand& a, uint64_t imm) {
    if (a.isREG()) return mov(a.getReg(), imm);
    int base = 0;
    int32_t disp = 0;
    const int bytes = static_cast<int>(a.getBit() / 8);
    const int imm_bytes = bytes == 8 ? 4 : bytes;
    const int64_t rest = bytes == 8 ? static_cast<int64_t>(imm) - static_cast<int32_t>(imm)
                                    : static_cast<int64_t>(imm) >> (imm_bytes * 8);
    const bool fits = bytes == 8 ? rest == 0 : (rest == 0 || rest == -1);
    if (!a.isMEM() || (bytes != 1 && bytes != 2 && bytes != 4 && bytes != 8) || !fits ||
        !simple_mem(static_cast<const Address&>(a), &base, &disp) || !room()) {
      return CodeGenerator::mov(a, imm);
    }
    uint8_t* p = at();
    if (bytes == 2) *p++ = 0x66;
    p = rex(p, bytes == 8, 0, 0, base);
    *p++ = bytes == 1 ? 0xc6 : 0xc7;
    p = modrm_mem(p, 0, base, disp);
    for (int i = 0; i < imm_bytes; ++i) *p++ = static_cast<uint8_t>(imm >> (8 * i));
    done(p);
  }
  void movzx(const Reg& r, const Operand& m) {
    if (!load_0f(r, m, m.isBit(8) ? 0xb6 : 0xb7)) CodeGenerator::movzx(r, m);
  }
  void movsx(const Reg& r, const Operand& m) {
    if (!load_0f(r, m, m.isBit(8) ? 0xbe : 0xbf)) CodeGenerator::movsx(r, m);
  }
  void movsxd(const Xbyak::Reg64& r, const Operand& m) {
    int base = 0;
    int32_t disp = 0;
    if (!m.isMEM() || !m.isBit(32) || !simple_mem(static_cast<const Address&>(m), &base, &disp) ||
        !room()) {
      return CodeGenerator::movsxd(r, m);
    }
    uint8_t* p = rex(at(), true, r.getIdx(), 0, base);
    *p++ = 0x63;
    done(modrm_mem(p, r.getIdx(), base, disp));
  }

 protected:
  // Room for one more instruction (at most 15 bytes): else xbyak's path,
  // which reports the full buffer.
  bool room() const { return size_ + 16 <= maxSize_; }
  uint8_t* at() { return top_ + size_; }
  void done(uint8_t* p) { size_ = static_cast<size_t>(p - top_); }
  static uint8_t* put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) *p++ = static_cast<uint8_t>(v >> (8 * i));
    return p;
  }

 private:
  // A general-purpose register of 32 or 64 bits.
  static bool gpr(const Reg& r) { return r.getKind() == Operand::REG && r.isBit(32 | 64); }
  // REX with W, and R, X, B from the high bits of reg, index, base; none if 0.
  static uint8_t* rex(uint8_t* p, bool w, int reg, int index, int base) {
    const int v = (w ? 8 : 0) | (reg >> 3 & 1) << 2 | (index >> 3 & 1) << 1 | (base >> 3 & 1);
    if (v != 0) *p++ = static_cast<uint8_t>(0x40 | v);
    return p;
  }
  // [base + disp] with a 64-bit base register and no index.
  static bool simple_mem(const Address& m, int* base, int32_t* disp) {
    if (m.getMode() != Address::M_ModRM || m.isBroadcast()) return false;
    const Xbyak::RegExp e = m.getRegExp();
    if (e.getIndex().getBit() != 0 || !e.getBase().isREG(64)) return false;
    const int64_t d = static_cast<int64_t>(e.getDisp());
    if (d != static_cast<int32_t>(d)) return false;
    *base = e.getBase().getIdx();
    *disp = static_cast<int32_t>(d);
    return true;
  }
  // ModRM (and SIB for rsp/r12 bases) and displacement of [base + disp].
  static uint8_t* modrm_mem(uint8_t* p, int reg, int base, int32_t disp) {
    const int r = (reg & 7) << 3, b = base & 7;
    const bool sib = b == 4;
    if (disp == 0 && b != 5) {
      *p++ = static_cast<uint8_t>(r | b);
      if (sib) *p++ = 0x24;
    } else if (disp >= -128 && disp <= 127) {
      *p++ = static_cast<uint8_t>(0x40 | r | b);
      if (sib) *p++ = 0x24;
      *p++ = static_cast<uint8_t>(disp);
    } else {
      *p++ = static_cast<uint8_t>(0x80 | r | b);
      if (sib) *p++ = 0x24;
      p = put32(p, static_cast<uint32_t>(disp));
    }
    return p;
  }
  // op d, s with d in ModRM.rm and s in ModRM.reg (01 add ... 89 mov).
  bool rr(uint8_t opcode, const Reg& d, const Reg& s) {
    if (!gpr(d) || !gpr(s) || d.getBit() != s.getBit() || !room()) return false;
    uint8_t* p = rex(at(), d.isBit(64), s.getIdx(), 0, d.getIdx());
    *p++ = opcode;
    *p++ = static_cast<uint8_t>(0xc0 | (s.getIdx() & 7) << 3 | (d.getIdx() & 7));
    done(p);
    return true;
  }
  // Group-1 op d, imm (ext: 0 add, 1 or, 4 and, 5 sub, 6 xor, 7 cmp): imm8
  // sign-extended when it fits, else imm32 (short form for rax/eax).
  bool ri(int ext, const Reg& d, uint32_t imm) {
    if (!gpr(d) || !room()) return false;
    uint8_t* p = rex(at(), d.isBit(64), 0, 0, d.getIdx());
    const int32_t v = static_cast<int32_t>(imm);
    if (v >= -128 && v <= 127) {
      *p++ = 0x83;
      *p++ = static_cast<uint8_t>(0xc0 | ext << 3 | (d.getIdx() & 7));
      *p++ = static_cast<uint8_t>(v);
    } else {
      if (d.getIdx() == 0) {
        *p++ = static_cast<uint8_t>(ext << 3 | 5);
      } else {
        *p++ = 0x81;
        *p++ = static_cast<uint8_t>(0xc0 | ext << 3 | (d.getIdx() & 7));
      }
      p = put32(p, imm);
    }
    done(p);
    return true;
  }
  // movzx / movsx r, byte or word [base + disp]: 0f op /r.
  bool load_0f(const Reg& r, const Operand& m, uint8_t op) {
    int base = 0;
    int32_t disp = 0;
    if (!gpr(r) || !m.isMEM() || !m.isBit(8 | 16) ||
        !simple_mem(static_cast<const Address&>(m), &base, &disp) || !room()) {
      return false;
    }
    uint8_t* p = rex(at(), r.isBit(64), r.getIdx(), 0, base);
    *p++ = 0x0f;
    *p++ = op;
    done(modrm_mem(p, r.getIdx(), base, disp));
    return true;
  }
};

}  // namespace userbpf::vm::jit
