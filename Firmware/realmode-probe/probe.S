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

/* put_hex16: prints ax as four hex digits. Clobbers ax, cx, dx. */
put_hex16:
        push    ax
        mov     al, ah
        call    put_hex8
        pop     ax
        /* fall through */

/* put_hex8: prints al as two hex digits. Clobbers ax, cx, dx. */
put_hex8:
        push    ax
        shr     al, 4
        call    put_nibble
        pop     ax
        /* fall through */

/* put_nibble: prints the low four bits of al as a lowercase hex digit. */
put_nibble:
        and     al, 0x0f
        add     al, 0x30                /* '0' */
        cmp     al, 0x39                /* '9' */
        jbe     put_char
        add     al, 0x27                /* 'a' - '0' - 10 */
        /* fall through */

/*
 * put_char: writes al to COM1's transmit holding register (0x3F8) once the line status
 * register (0x3FD) reports it empty (bit 5), giving up the wait after 65535 polls so a
 * missing UART cannot hang the probe. Clobbers cx, dx.
 */
put_char:
        push    ax
        mov     dx, 0x3fd
        mov     cx, 0xffff
wait_thre:
        in      al, dx
        test    al, 0x20
        jnz     ready
        loop    wait_thre
ready:
        pop     ax
        mov     dx, 0x3f8
        out     dx, al
        ret
