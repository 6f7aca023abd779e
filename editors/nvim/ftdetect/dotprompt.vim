" Dotprompt files; the language id the gpo language server expects.
autocmd BufRead,BufNewFile *.prompt setfiletype dotprompt
