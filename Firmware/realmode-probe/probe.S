/*
 * realmode-probe: walks PCI bus 0 through the CF8/CFC configuration mechanism and prints
 * one line per present function 0 on the COM1 UART, then halts.
 *
 *   BB:DD.F VVVV:DDDD\n        (lowercase hex, e.g. "00:1f.0 8086:2918")
 *
 * Runs in 16-bit real mode from any load address (only relative jumps and calls; no data in
 * memory). It sets up its own stack at 0000:7C00, so load it anywhere below 0x7000 or at
 * 0x7C00 and up; the tests load it at 0000:7C00 with CS=0, IP=0x7C00.
 *
 * Rebuild (GNU binutils, Debian package "binutils"):
 *   as --32 -o probe.o probe.S && objcopy -O binary -j .text probe.o probe.bin
 */
        .intel_syntax noprefix
        .code16
        .text
        .globl _start
_start:
        cli
        cld
        xor     ax, ax
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     sp, 0x7c00

        xor     ebx, ebx                /* ebx: device number 0..31 */
next_device:
        mov     eax, ebx
        shl     eax, 11                 /* device << 11, bus 0, function 0, register 0 */
        or      eax, 0x80000000         /* enable bit */
        mov     dx, 0xcf8
        out     dx, eax
        mov     dx, 0xcfc
        in      eax, dx                 /* device id << 16 | vendor id */
        cmp     ax, 0xffff
        je      absent
        mov     edi, eax

        xor     al, al                  /* bus 00 */
        call    put_hex8
        mov     al, 0x3a                /* ':' */
        call    put_char
        mov     al, bl                  /* device */
        call    put_hex8
        mov     al, 0x2e                /* '.' */
        call    put_char
        mov     al, 0x30                /* function '0' */
        call    put_char
        mov     al, 0x20                /* ' ' */
        call    put_char
        mov     ax, di                  /* vendor id */
        call    put_hex16
        mov     al, 0x3a                /* ':' */
        call    put_char
        mov     eax, edi
        shr     eax, 16                 /* device id */
        call    put_hex16
        mov     al, 0x0a                /* '\n' */
        call    put_char
absent:
        inc     bx
        cmp     bx, 32
        jb      next_device

done:
        hlt
        jmp     done

/* put_hex16, put_hex8, put_nibble, put_char (COM1). */
        .include "serial-hex.S"
