<?php
// EC Suite Denial Post URL: records why the consumer was declined.
require __DIR__ . '/../_store.php';

legacy_record('denial', array(
    'denialId'             => isset($_POST['denialId']) ? $_POST['denialId'] : '',
    'reasonForDeclineCode' => isset($_POST['reasonForDeclineCode']) ? $_POST['reasonForDeclineCode'] : '',
    'email'                => isset($_POST['email']) ? $_POST['email'] : '',
));
header('Content-Type: text/plain');
echo "DENIAL RECORDED\n";
