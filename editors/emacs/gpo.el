;;; gpo.el --- Dotprompt mode and the GPO prompt optimizer over eglot  -*- lexical-binding: t; -*-

;; Author: The gpo authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9"))
;; Keywords: languages, tools
;; SPDX-License-Identifier: Apache-2.0

;; This file is not part of GNU Emacs.

;;; Commentary:

;; `dotprompt-mode' for Google Dotprompt `.prompt' files, and the
;; glue that connects it to `gpo lsp', the language server of the GPO
;; prompt optimizer, through eglot.
;;
;; Visiting a `.prompt' file turns on `dotprompt-mode' (frontmatter
;; and Handlebars tags highlighted) and starts eglot with `gpo lsp'
;; (see `gpo-auto-start' and `gpo-server-command').  Then:
;;
;; - Flymake shows the frontmatter, template and example-set errors at
;;   their lines, and a note when a better prompt is ready;
;; - ElDoc (hover) shows the scores: dev and test, the best in the
;;   trajectory, the step and the word budget;
;; - `eglot-code-actions' offers "Apply GPO suggestion" (a quickfix)
;;   and the Optimize / Stop / Re-score commands.
;;
;; The same things as commands:
;;
;;   M-x gpo-optimize   start (or join) an optimization of the saved file
;;   M-x gpo-stop       stop it
;;   M-x gpo-rescore    score the buffer's text on dev and test
;;   M-x gpo-preview    show the suggested file as a diff
;;   M-x gpo-apply      apply the suggestion to the buffer
;;
;; Works with eglot 1.9 from GNU ELPA (Debian's elpa-eglot, Emacs 28)
;; and with the eglot built into Emacs 29 and later.  Eglot 1.9 never
;; sends `codeAction/resolve'; the server puts the edit in the apply
;; action itself for such clients, and `gpo-apply' resolves it when a
;; server did not.
;;
;; Setup (the `gpo' command on PATH: pip install /path/to/gpo):
;;
;;   (load "/path/to/gpo/editors/emacs/gpo.el")

;;; Code:

(require 'cl-lib)
(require 'jsonrpc)

(defvar eglot-server-programs)
(declare-function eglot-ensure "eglot" ())
(declare-function eglot-current-server "eglot" ())
(declare-function eglot-managed-p "eglot" ())
(declare-function eglot-execute "eglot" (server action))
(declare-function eglot--TextDocumentIdentifier "eglot" ())
(declare-function eglot--signal-textDocument/didChange "eglot" ())
(declare-function eglot--apply-workspace-edit "eglot" (wedit &optional confirm))

(defgroup gpo nil
  "Dotprompt files and the GPO prompt optimizer."
  :group 'tools
  :prefix "gpo-")

(defcustom gpo-server-command '("gpo" "lsp")
  "The command that starts the GPO language server, as a list of strings.
The default finds `gpo' on the variable `exec-path'.  Give the full path to
use another environment, such as (\"/path/to/venv/bin/gpo\" \"lsp\"),
and add options such as \"--api-base\" URL or \"--cache-dir\" DIR."
  :type '(repeat string))

(defcustom gpo-settings nil
  "The `gpo' settings object, sent to the server as initializationOptions.
A plist in the JSON shape of the README's settings table, e.g.
  (:autoOptimizeOnSave t
   :models (:task \"openai/gpt-4o-mini\")
   :budget (:initial 40 :final 10))
nil: the file's own settings and the server's defaults.  Takes
effect when the server starts (\\[eglot-reconnect] to restart it)."
  :type '(plist :key-type symbol :value-type sexp))

(defcustom gpo-auto-start t
  "Non-nil: start eglot (`eglot-ensure') in every `dotprompt-mode' file buffer."
  :type 'boolean)

;;; The major mode

(defface gpo-frontmatter-fence-face
  '((t :inherit font-lock-comment-delimiter-face))
  "Face of the `---' lines around a Dotprompt frontmatter.")

(defface gpo-frontmatter-key-face
  '((t :inherit font-lock-variable-name-face))
  "Face of the keys in a Dotprompt frontmatter.")

(defface gpo-tag-face
  '((t :inherit font-lock-variable-name-face))
  "Face of a Handlebars tag such as {{country}}.")

(defface gpo-block-tag-face
  '((t :inherit font-lock-keyword-face))
  "Face of a Handlebars block tag: {{#if x}}, {{else}}, {{/if}}.")

(defface gpo-helper-tag-face
  '((t :inherit font-lock-builtin-face))
  "Face of a Dotprompt helper tag such as {{role \"system\"}} or {{>partial}}.")

(defun gpo--frontmatter-end ()
  "The end of the buffer's frontmatter (its closing `---' line), or nil."
  (save-excursion
    (save-restriction
      (widen)
      (goto-char (point-min))
      (and (looking-at "---[ \t]*$")
           (progn (forward-line 1)
                  (re-search-forward "^---[ \t]*$" nil t))
           (point)))))

(defun gpo--match-fence (limit)
  "Font-lock matcher: the next frontmatter fence line before LIMIT."
  (let ((end (gpo--frontmatter-end))
        found)
    (when end
      (while (and (not found)
                  (re-search-forward "^---[ \t]*$" (min limit end) t))
        (when (or (= (match-beginning 0) (point-min)) (= (match-end 0) end))
          (setq found t))))
    found))

(defun gpo--match-key (limit)
  "Font-lock matcher: the next frontmatter key before LIMIT."
  (let ((end (gpo--frontmatter-end)))
    (and end
         (< (point) end)
         (re-search-forward "^\\([[:alpha:]_][[:alnum:]_.-]*\\)[ \t]*:"
                            (min limit end) t))))

(defconst gpo--helpers
  '("role" "history" "media" "section" "json" "ifEquals" "unlessEquals")
  "Dotprompt's own helpers, highlighted with `gpo-helper-tag-face'.")

(defvar dotprompt-font-lock-keywords
  `((gpo--match-fence 0 'gpo-frontmatter-fence-face)
    (gpo--match-key 1 'gpo-frontmatter-key-face)
    ("{{!\\(?:--\\)?\\(?:.\\|\n\\)*?}}" 0 'font-lock-comment-face t)
    ("{{~?[#^/][^}]*}}\\|{{~?else[^}]*}}" 0 'gpo-block-tag-face t)
    (,(concat "{{~?\\(?:>[^}]*\\|" (regexp-opt gpo--helpers 'words) "[^}]*\\)}}")
     0 'gpo-helper-tag-face t)
    ("{{{?[^}!#^/>][^}]*}}}?" 0 'gpo-tag-face keep))
  "Highlighting in `dotprompt-mode': the frontmatter and the Handlebars tags.")

(defvar dotprompt-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "C-c C-o") #'gpo-optimize)
    (define-key map (kbd "C-c C-s") #'gpo-stop)
    (define-key map (kbd "C-c C-r") #'gpo-rescore)
    (define-key map (kbd "C-c C-p") #'gpo-preview)
    (define-key map (kbd "C-c C-a") #'gpo-apply)
    map)
  "Keymap of `dotprompt-mode'.")

;;;###autoload
(define-derived-mode dotprompt-mode text-mode "Dotprompt"
  "Major mode for Google Dotprompt `.prompt' files.
A YAML frontmatter between `---' lines, then a Handlebars
template.  With `gpo-auto-start', eglot connects the buffer to
`gpo lsp' (see `gpo-server-command').

\\{dotprompt-mode-map}"
  (setq-local font-lock-defaults '(dotprompt-font-lock-keywords t))
  (setq-local font-lock-multiline t)
  (setq-local comment-start "{{! ")
  (setq-local comment-end " }}")
  (setq-local comment-start-skip "{{!-*[ \t]*")
  (when gpo-auto-start
    (gpo--start-eglot)))

;;;###autoload
(add-to-list 'auto-mode-alist '("\\.prompt\\'" . dotprompt-mode))

;;; Eglot

(defun gpo--initialization-options (&optional _server)
  "`gpo-settings' as it is when the server (re)connects; {} when nil."
  (or gpo-settings (make-hash-table)))

;;;###autoload
(defun gpo-eglot-contact (&optional _interactive _project)
  "The eglot contact of `gpo lsp'.
`gpo-server-command', with `gpo-settings' as initializationOptions."
  (append gpo-server-command
          (list :initializationOptions #'gpo--initialization-options)))

;;;###autoload
(with-eval-after-load 'eglot
  (add-to-list 'eglot-server-programs
               '((dotprompt-mode :language-id "dotprompt") . gpo-eglot-contact)))

(defun gpo--start-eglot ()
  "Start eglot for the current buffer when it visits a file."
  (when (and buffer-file-name (require 'eglot nil t))
    (eglot-ensure)))

(defun gpo--server ()
  "The buffer's eglot server, or a `user-error'."
  (or (and (fboundp 'eglot-current-server) (eglot-current-server))
      (user-error "GPO: no language server for this buffer (M-x eglot starts one)")))

(defun gpo--document ()
  "The buffer's TextDocumentIdentifier, as eglot sent it to the server."
  (eglot--TextDocumentIdentifier))

(defun gpo--request (method params)
  "Send the buffer's pending edits to the server, then request METHOD with PARAMS."
  (let ((server (gpo--server)))
    (eglot--signal-textDocument/didChange)
    (jsonrpc-request server method params)))

(defun gpo--command (command)
  "Run the server's COMMAND (gpo.optimize, gpo.stop, gpo.rescore) on the buffer."
  (gpo--request :workspace/executeCommand
                (list :command command
                      :arguments (vector (plist-get (gpo--document) :uri)))))

(defcustom gpo-example-extensions '("jsonl" "csv" "yaml" "yml")
  "Extensions of example files: saving one tells the GPO servers.
The server asks for no file watching, so Emacs reports the save
itself, and the server checks and re-scores the prompts that use
the file.  nil: report nothing."
  :type '(repeat string))

(defun gpo--servers ()
  "The eglot servers of the open `dotprompt-mode' buffers."
  (let (servers)
    (dolist (buffer (buffer-list) servers)
      (with-current-buffer buffer
        (when (and (derived-mode-p 'dotprompt-mode)
                   (fboundp 'eglot-managed-p) (eglot-managed-p))
          (cl-pushnew (eglot-current-server) servers))))))

(defun gpo--example-saved ()
  "After saving an example file, tell the GPO servers it changed."
  (when (and buffer-file-name
             (member (file-name-extension buffer-file-name) gpo-example-extensions))
    (let ((servers (gpo--servers)))
      (when servers
        (let ((change (list :uri (plist-get (gpo--document) :uri) :type 2)))
          (dolist (server servers)
            (jsonrpc-notify server :workspace/didChangeWatchedFiles
                            (list :changes (vector change)))))))))

(add-hook 'after-save-hook #'gpo--example-saved)

(defun gpo-optimize ()
  "Start optimizing the saved prompt file, or join the job already running.
Finished steps stay saved: running it again resumes."
  (interactive)
  (let ((job (gpo--command "gpo.optimize")))
    (message "GPO: optimizing (job %s, %s)"
             (plist-get job :job) (plist-get job :state))
    job))

(defun gpo-stop ()
  "Stop optimizing the prompt file."
  (interactive)
  (let ((job (gpo--command "gpo.stop")))
    (message (if job
                 (format "GPO: stopped job %s" (plist-get job :job))
               "GPO: no optimization is running for this file"))
    job))

(defun gpo-rescore ()
  "Score the buffer's text on dev and test, for the hover to show."
  (interactive)
  (gpo--command "gpo.rescore")
  (message "GPO: scoring; the hover shows the scores when they are in"))

(defun gpo-preview ()
  "Show the file as the GPO suggestion would make it, as a diff.
Return the suggested text, or nil when there is no suggestion."
  (interactive)
  (let* ((answer (gpo--request :gpo/suggestion
                               (list :textDocument (gpo--document))))
         (text (plist-get answer :text))
         (title (plist-get answer :title)))
    (if (not text)
        (message "GPO: no suggestion for this prompt yet")
      (let ((buffer (get-buffer-create "*GPO suggestion*")))
        (with-current-buffer buffer
          (let ((inhibit-read-only t))
            (erase-buffer)
            (insert text)))
        (diff-buffers (current-buffer) buffer)
        (message "GPO: %s (M-x gpo-apply)" title)))
    text))

(defun gpo--apply-action (server)
  "Return the buffer's apply action from SERVER, or nil."
  (let* ((last (save-restriction
                 (widen)
                 (1- (line-number-at-pos (point-max)))))
         (actions (jsonrpc-request
                   server :textDocument/codeAction
                   (list :textDocument (gpo--document)
                         :range (list :start '(:line 0 :character 0)
                                      :end (list :line last :character 0))
                         :context '(:diagnostics [] :only ["quickfix"])))))
    (cl-find-if (lambda (action)
                  (equal (plist-get (plist-get action :data) :action) "gpo.apply"))
                actions)))

(defun gpo--check-enabled (action)
  "Signal a `user-error' when ACTION is disabled."
  (let ((disabled (plist-get action :disabled)))
    (when disabled
      (user-error "GPO: cannot apply: %s" (plist-get disabled :reason)))))

(defun gpo-apply ()
  "Apply the GPO suggestion to the buffer: edit its template body only.
Return the action's title."
  (interactive)
  (let ((server (gpo--server)))
    (eglot--signal-textDocument/didChange)
    (let ((action (gpo--apply-action server)))
      (unless action
        (user-error "GPO: no suggestion for this prompt yet"))
      (gpo--check-enabled action)
      (unless (plist-get action :edit)
        ;; A server that computes the edit on codeAction/resolve.
        (setq action (condition-case err
                         (jsonrpc-request server :codeAction/resolve action)
                       (jsonrpc-error
                        (user-error "GPO: cannot apply: %s"
                                    (error-message-string err)))))
        (gpo--check-enabled action))
      (unless (plist-get action :edit)
        (user-error "GPO: cannot apply: the server sent no edit"))
      (if (fboundp 'eglot-execute)  ; eglot 1.15 and later
          (eglot-execute server action)
        (eglot--apply-workspace-edit (plist-get action :edit)))
      (message "GPO: %s" (plist-get action :title))
      (plist-get action :title))))

(provide 'gpo)
;;; gpo.el ends here
