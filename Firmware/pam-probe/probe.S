/*
 * pam-probe: programs the q35 MCH's PAM and SMRAM registers through CF8/CFC and reports what
 * CPU reads and writes of the legacy segments reach, one line per case on the COM1 UART,
 * then halts.
 *
 * For the system BIOS segment 0xF0000 (PAM0 bits 5:4, register 0x90) and the segment 0xC0000
 * (PAM1 bits 1:0, register 0x91), and each attribute 0-3:
 *   set the attribute to 3 and write 0xa5 to the segment's first byte (DRAM now holds 0xa5);
 *   set the attribute under test; read the byte (r1); write 0x5a; read again (r2);
 *   set the attribute to 3 and read (r3: what DRAM holds now).
 *   Line: "SSSS M r1 r2 r3", SSSS the real-mode segment, M the attribute.
 * For SMRAM (register 0x9D) at 0xA0000:
 *   open it (D_OPEN | G_SMRAME | C_BASE_SEG = 0x4a), write 0xa5, read (r1); close it (0x0a),
 *   read (r2), write 0x5a; open it again and read (r3). Line: "a000 s r1 r2 r3".
 *
 * Runs in 16-bit real mode from any load address (relative jumps and calls only, no data in
 * memory), with its stack at 0000:7C00; the tests load it at 0000:7C00 (CS=0, IP=0x7C00).
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
        mov     ss, ax
        mov     sp, 0x7c00

        mov     si, 0xf000              /* segment 0xF0000 */
        mov     di, 0xcfc               /* register 0x90 is byte 0 of dword 0x90 */
        mov     bl, 4                   /* PAM0 bits 5:4 */
        call    probe_segment
        mov     si, 0xc000              /* segment 0xC0000 */
        mov     di, 0xcfd               /* register 0x91 is byte 1 of dword 0x90 */
        mov     bl, 0                   /* PAM1 bits 1:0 */
        call    probe_segment

        mov     ax, 0xa000
        mov     es, ax
        mov     al, 0x4a                /* SMRAM open */
        call    set_smram
        mov     byte ptr es:[0], 0xa5
        mov     al, es:[0]
        push    ax                      /* r1 */
        mov     al, 0x0a                /* SMRAM closed */
        call    set_smram
        mov     al, es:[0]
        push    ax                      /* r2 */
        mov     byte ptr es:[0], 0x5a
        mov     al, 0x4a                /* open again */
        call    set_smram
        mov     al, es:[0]
        push    ax                      /* r3 */
        mov     ax, 0xa000
        call    put_hex16
        mov     al, 0x20
        call    put_char
        mov     al, 0x73                /* 's' */
        call    print_results

done:
        hlt
        jmp     done

/* probe_segment: si = segment, di = config data port, bl = attribute shift. Prints four lines. */
probe_segment:
        mov     es, si
        xor     bh, bh                  /* bh: attribute under test, 0..3 */
next_attribute:
        mov     al, 3
        call    set_pam
        mov     byte ptr es:[0], 0xa5
        mov     al, bh
        call    set_pam
        mov     al, es:[0]
        push    ax                      /* r1 */
        mov     byte ptr es:[0], 0x5a
        mov     al, es:[0]
        push    ax                      /* r2 */
        mov     al, 3
        call    set_pam
        mov     al, es:[0]
        push    ax                      /* r3 */
        mov     ax, si
        call    put_hex16
        mov     al, 0x20
        call    put_char
        mov     al, bh
        add     al, 0x30                /* attribute digit */
        call    print_results
        inc     bh
        cmp     bh, 4
        jb      next_attribute
        ret

/*
 * print_results: prints the character in al, then " r1 r2 r3\n" from the three words pushed
 * before the call (r1 first), and drops them. Clobbers ax, cx, dx, bp.
 */
print_results:
        call    put_char
        mov     bp, sp
        mov     al, 0x20
        call    put_char
        mov     al, [bp + 6]            /* r1 */
        call    put_hex8
        mov     al, 0x20
        call    put_char
        mov     al, [bp + 4]            /* r2 */
        call    put_hex8
        mov     al, 0x20
        call    put_char
        mov     al, [bp + 2]            /* r3 */
        call    put_hex8
        mov     al, 0x0a
        call    put_char
        ret     6

/* set_pam: writes al << bl to the config register at data port di (bus 0, device 0). */
set_pam:
        push    ax
        mov     eax, 0x80000090
        mov     dx, 0xcf8
        out     dx, eax
        pop     ax
        mov     cl, bl
        shl     al, cl
        mov     dx, di
        out     dx, al
        ret

/* set_smram: writes al to SMRAM (bus 0, device 0, register 0x9D). */
set_smram:
        push    ax
        mov     eax, 0x8000009c
        mov     dx, 0xcf8
        out     dx, eax
        pop     ax
        mov     dx, 0xcfd
        out     dx, al
        ret

/* put_hex16, put_hex8, put_nibble, put_char (COM1). */
        .include "serial-hex.S"
